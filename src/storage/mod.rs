//! Files in and out, under the rules that keep what lies on the disk from deciding a verdict
//! or being damaged: reads take only regular files, each of bounded size ([`read`]); writes
//! go into folders and files that clipada made and marks as its own, without following
//! symlinks, through unpredictable temporary names and atomic renames, and clipada deletes or
//! truncates only what it made ([`owned`]). Code clipada loads from a file (ONNX Runtime's
//! library) must be something root alone could have placed ([`trust`]).

pub mod owned;
pub mod read;
#[cfg(any(feature = "plant", feature = "hmi"))]
pub(crate) mod secret;
pub(crate) mod trust;
