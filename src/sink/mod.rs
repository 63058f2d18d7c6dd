//! Results out. Overlay images for now; display, GPIO and logs hang off the same place later.

pub mod overlay;
