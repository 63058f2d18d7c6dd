//! The integration tests, one binary (linking tract and ONNX Runtime once): each module is one
//! area, written against the library's public interface or the `clipada` binary.

mod common;

mod cli;
mod contract;
mod failsafe;
mod fuzz;
mod goldens;
mod infer_cli;
mod memory_eval;
mod metrics;
#[cfg(feature = "hmi")]
mod operator_interface;
mod ort_engine;
mod overlay;
#[cfg(feature = "plant")]
mod plant_networks;
mod quantized;
mod station_alloc;
mod station_board;
mod station_parts;
mod station_recipes;
mod station_run;
