//! Anomaly maps as NumPy `.npy` files (format 1.0, little-endian float32, C order), for
//! integrators who analyse maps themselves and for comparing the runtime with the Python
//! training code.

use crate::score::AnomalyMap;

/// The `.npy` bytes of `map`: magic, version 1.0, header padded to a multiple of 64, data.
pub(crate) fn npy_bytes(map: AnomalyMap<'_>) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}", map.height, map.width).into_bytes();
    // 6 magic + 2 version + 2 length bytes, the header, a newline: a multiple of 64 in all.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + map.values.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend(map.values.iter().flat_map(|v| v.to_le_bytes()));
    bytes
}
