//! What the station benchmarks share (included by each with `#[path]`).

use std::path::{Path, PathBuf};

/// Writes `dir/station.toml`: the shipped sample test parts in a loop, the default model on
/// `backend` with the demo's memory, recorded lines (`gpio.log`, with `gpio_keys`) and the
/// result log (`results.jsonl`) in `dir`, triggered as `trigger` says, then `extra`; its path.
pub fn default_station(root: &Path, dir: &Path, backend: &str, trigger: &str, gpio_keys: &str, extra: &str) -> PathBuf {
    let config = format!(
        "state_dir = {state:?}\n\
         [model]\npath = {model:?}\nbackend = {backend:?}\nmemory = {memory:?}\n\
         [source]\nkind = \"directory\"\npath = {parts:?}\nloop = true\n\
         [trigger]\n{trigger}\n\
         [gpio]\nkind = \"recording\"\nrecord = {gpio:?}\n{gpio_keys}\n\
         [log]\nresults = {results:?}\n{extra}",
        state = dir.join("state"),
        model = root.join("models/default/efficientnet-lite0.onnx"),
        memory = root.join("target/demo/part.memory"),
        parts = root.join("models/samples/part/test"),
        gpio = dir.join("gpio.log"),
        results = dir.join("results.jsonl"),
    );
    let path = dir.join("station.toml");
    std::fs::write(&path, config).unwrap();
    path
}
