//! Property tests of every parser of outside input: the model contract, the memory file, the
//! station configuration, image decoding and folder walking. Whatever the bytes, they never
//! panic or hang, and every refusal names the file (and, for documents, the field).
//!
//! CI runs a fixed number of cases per property ([`CASES`]); a longer run:
//! `PROPTEST_CASES=100000 cargo test --release --test it fuzz::`.

use crate::common;

use std::path::Path;

use clipada::memory::file::from_bytes as memory_from_bytes;
use clipada::model::contract::parse_contract;
use clipada::source::decode::{decode_rgb, MAX_FRAME_PIXELS, MAX_FRAME_SIDE};
use clipada::source::files::collect_images;
use clipada::station::config::{ConfigError, StationConfig};
use clipada::station::plan::StationPlan;
use proptest::prelude::*;

/// Cases per property in CI (overridden by `PROPTEST_CASES`).
const CASES: u32 = 256;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// One edit of a byte string: flip a byte, cut it, or splice random bytes in.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Cut(usize),
    Splice(usize, Vec<u8>),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, v)| Edit::Flip(at, v)),
        any::<usize>().prop_map(Edit::Cut),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 0..16)).prop_map(|(at, b)| Edit::Splice(at, b)),
    ];
    proptest::collection::vec(edit, 1..6)
}

fn apply(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for edit in edits {
        let len = out.len().max(1);
        match edit {
            Edit::Flip(at, v) if !out.is_empty() => out[at % len] ^= v | 1,
            Edit::Cut(at) => out.truncate(at % len),
            Edit::Splice(at, bytes) => {
                let at = at % (out.len() + 1);
                out.splice(at..at, bytes.iter().copied());
            }
            _ => {}
        }
    }
    out
}

/// The fixture's contract document, and a JSON value of any shape to put into it.
fn contract_text() -> String {
    let file = clipada::model::ModelFile::open(&common::tiny_model()).unwrap();
    file.proto.metadata_props.iter().find(|p| p.key == "clipada").unwrap().value.clone()
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        "[a-z_]{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The dotted paths of every value in a JSON document.
fn paths(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    if let serde_json::Value::Object(map) = value {
        for (key, child) in map {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            out.push(path.clone());
            paths(child, &path, out);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn contract_documents_with_any_field_replaced_never_panic_and_errors_name_file_and_field(
        pick in any::<usize>(), value in json_value()
    ) {
        let mut doc: serde_json::Value = serde_json::from_str(&contract_text()).unwrap();
        let mut all = Vec::new();
        paths(&doc, "", &mut all);
        let target = &all[pick % all.len()];
        let pointer = format!("/{}", target.replace('.', "/"));
        *doc.pointer_mut(&pointer).unwrap() = value;
        if let Err(e) = parse_contract(Path::new("fuzz.onnx"), &doc.to_string()) {
            let message = e.to_string();
            prop_assert!(message.starts_with("fuzz.onnx: contract field `"), "{}", message);
        }
    }

    #[test]
    fn contract_text_with_any_bytes_edited_never_panics(edits in edits()) {
        let text = apply(contract_text().as_bytes(), &edits);
        if let Ok(text) = std::str::from_utf8(&text) {
            if let Err(e) = parse_contract(Path::new("fuzz.onnx"), text) {
                prop_assert!(e.to_string().starts_with("fuzz.onnx: "));
            }
        }
    }

    #[test]
    fn memory_files_with_any_bytes_edited_never_panic_and_errors_name_file_and_field(edits in edits()) {
        static VALID: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let valid = VALID.get_or_init(|| std::fs::read(common::tiny_memory()).unwrap());
        let bytes = apply(valid, &edits);
        if let Err(e) = memory_from_bytes(Path::new("fuzz.memory"), &bytes) {
            let message = e.to_string();
            prop_assert!(message.starts_with("fuzz.memory: field `"), "{}", message);
        }
    }

    #[test]
    fn station_configs_with_any_bytes_edited_never_panic_and_errors_name_file_and_key(edits in edits()) {
        let valid = std::fs::read(common::root().join("board/jetson-orin-nano.toml")).unwrap();
        let bytes = apply(&valid, &edits);
        let Ok(text) = std::str::from_utf8(&bytes) else { return Ok(()) };
        let path = Path::new("fuzz.toml");
        match StationConfig::parse(text, path).and_then(|c| StationPlan::from_config(c, path)) {
            Ok(_) => {}
            Err(ConfigError::Invalid { path: p, key, .. }) => prop_assert!(p == path && !key.is_empty()),
            Err(other) => prop_assert!(false, "{}", other),
        }
    }

    #[test]
    fn images_with_any_bytes_edited_decode_within_the_limits_or_are_refused(edits in edits(), format in 0..3usize) {
        static VALID: std::sync::OnceLock<[Vec<u8>; 3]> = std::sync::OnceLock::new();
        let valid = VALID.get_or_init(|| {
            let frame = clipada::source::files::read_image(&common::sample("test/scratch/000.png")).unwrap();
            [image::ImageFormat::Png, image::ImageFormat::Jpeg, image::ImageFormat::Bmp].map(|f| {
                let mut bytes = std::io::Cursor::new(Vec::new());
                frame.write_to(&mut bytes, f).unwrap();
                bytes.into_inner()
            })
        });
        if let Ok(frame) = decode_rgb(&apply(&valid[format], &edits)) {
            let (w, h) = frame.dimensions();
            prop_assert!(w <= MAX_FRAME_SIDE && h <= MAX_FRAME_SIDE && u64::from(w) * u64::from(h) <= MAX_FRAME_PIXELS);
        }
    }

    #[test]
    fn folder_trees_with_links_anywhere_are_walked_once_and_end(
        entries in proptest::collection::vec((0..4usize, 0..4usize, 0..3u8), 1..24)
    ) {
        // Four folders (0 is the root) and entries in them: an image, a subfolder link, or a
        // symlink to another folder (loops included).
        let dir = tempfile::tempdir().unwrap();
        let folders: Vec<std::path::PathBuf> =
            ["", "a", "a/b", "c"].iter().map(|f| dir.path().join(f)).collect();
        for folder in &folders {
            std::fs::create_dir_all(folder).unwrap();
        }
        let mut images = 0;
        for (n, (at, to, kind)) in entries.iter().enumerate() {
            let name = folders[*at].join(format!("e{n}"));
            match kind {
                0 => { std::fs::write(name.with_extension("png"), b"").unwrap(); images += 1; }
                1 => std::os::unix::fs::symlink(&folders[*to], &name).unwrap(),
                _ => std::os::unix::fs::symlink(folders[*to].join("missing.png"), name.with_extension("png")).unwrap(),
            }
        }
        let found = collect_images(&[dir.path().to_path_buf()]).unwrap();
        let real = found.iter().filter(|i| std::fs::metadata(&i.path).is_ok()).count();
        prop_assert_eq!(real, images, "each real image exactly once");
    }
}
