//! Results out: overlay images, anomaly maps as `.npy`, the station's screen and the
//! framebuffer it is drawn on.
//! (The station's GPIO lines and logs live in `station`.)

pub mod display;
pub mod framebuffer;
pub mod npy;
pub mod overlay;
