//! Frames in. Image files for now; cameras hang off the same place later.

pub mod files;
