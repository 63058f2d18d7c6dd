//! Results out: overlay images, PNG and `.npy` bytes, the station's screen and the
//! framebuffer it is drawn on.
//! (The station's GPIO lines and logs live in `station`.)

pub mod display;
pub mod framebuffer;
pub mod npy;
pub mod overlay;
pub mod png;
