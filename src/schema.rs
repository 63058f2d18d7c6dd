//! Naming the field at fault in documents read with serde (the model contract, the station
//! configuration): the full dotted path, and for a missing field the field itself (serde reports
//! it at its parent).

/// The dotted path of the field an error of `reason` at `path` is about.
pub(crate) fn field_path(path: &serde_path_to_error::Path, reason: &str) -> String {
    let at = path.to_string();
    let missing = reason.split_once("missing field `").and_then(|(_, rest)| rest.split('`').next());
    match missing {
        Some(missing) if at == "." => missing.to_string(),
        Some(missing) => format!("{at}.{missing}"),
        None => at,
    }
}
