//! clipada: the runtime of a standalone visual-inspection camera running CLIP-ADA.
//!
//! Data flows one way (docs/ARCHITECTURE.md): frames ([`source`]) are preprocessed
//! ([`preprocess`]), run through a model ([`model`]), scored into an anomaly map and score
//! ([`score`]), judged ([`verdict`]), and handed to sinks ([`sink`]). [`pipeline`] wires one
//! frame through; [`station`] is the inspection loop of a camera station (`clipada run`);
//! [`commands`] are the subcommands, as library functions.
#![deny(missing_docs)]

pub mod calibration;
pub mod cli;
pub mod commands;
pub mod eval;
pub mod hmi;
pub mod logging;
pub mod memory;
pub mod model;
pub mod pipeline;
pub mod plant;
pub mod preprocess;
pub mod process;
pub mod progress;
pub(crate) mod schema;
pub mod score;
pub mod sink;
pub mod source;
pub mod station;
pub(crate) mod storage;
pub mod verdict;
