//! Secrets (passwords, tokens, private keys) and certificates read for the plant networks and
//! the operator interface: a secret is a private regular file of root or the station's user,
//! reached without a symbolic link.

use anyhow::Context;

use crate::storage::read::read_regular;

/// Largest certificate, key, password or token file.
pub(crate) const MAX_SECRET_BYTES: u64 = 1 << 20;

/// Reads a secret: [`secret`]'s first line, which must not be empty.
pub(crate) fn secret_text(path: &std::path::Path) -> anyhow::Result<String> {
    let bytes = secret(path)?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))?;
    let line = text.lines().next().unwrap_or_default();
    anyhow::ensure!(!line.trim().is_empty(), "{}: its first line is empty", path.display());
    Ok(line.to_string())
}

/// Reads a secret file: a regular file reached without a symbolic link, owned by root or by
/// this process's user, not readable by others, at most 1 MiB.
pub(crate) fn secret(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use rustix::fs::{Mode, OFlags};
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    // Not through a link anywhere on the way: the folders named are the ones that hold it.
    for ancestor in path.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()) {
        if std::fs::symlink_metadata(ancestor).is_ok_and(|m| m.file_type().is_symlink()) {
            anyhow::bail!("{shown}: {} is a symbolic link: name the file by its real folders", ancestor.display());
        }
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let descriptor = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| match e {
        rustix::io::Errno::LOOP => anyhow::anyhow!("{shown}: a symbolic link: name the file itself"),
        e => anyhow::anyhow!("{shown}: {}", std::io::Error::from(e)),
    })?;
    let file = std::fs::File::from(descriptor);
    let metadata = file.metadata().with_context(|| format!("{shown}"))?;
    anyhow::ensure!(metadata.is_file(), "{shown}: not a regular file");
    let user = rustix::process::geteuid().as_raw();
    secret_allowed(metadata.mode(), metadata.uid(), user, metadata.len())
        .map_err(|why| anyhow::anyhow!("{shown}: {why}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES).read_to_end(&mut bytes).with_context(|| format!("{shown}"))?;
    Ok(bytes)
}

/// Whether a secret file of `mode`, `owner` and `size` may be read by `user`; why not.
fn secret_allowed(mode: u32, owner: u32, user: u32, size: u64) -> Result<(), String> {
    if mode & 0o007 != 0 {
        return Err(format!("readable by others (mode {:o}): make it 0600 or 0640", mode & 0o777));
    }
    if owner != 0 && owner != user {
        return Err(format!("owned by user {owner}: a secret belongs to root or to the station's user"));
    }
    if size > MAX_SECRET_BYTES {
        return Err(format!("over {MAX_SECRET_BYTES} bytes"));
    }
    Ok(())
}

/// The certificates (PEM) of the file at `path`: at least one.
pub(crate) fn pem_certificates(
    path: &std::path::Path,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let bytes = read_regular(path, MAX_SECRET_BYTES, "certificate")?;
    let certs = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{}: no certificate in it", path.display());
    Ok(certs)
}

/// The private key (PEM) of the secret file at `path`.
pub(crate) fn pem_private_key(path: &std::path::Path) -> anyhow::Result<rustls::pki_types::PrivateKeyDer<'static>> {
    let bytes = secret(path)?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| anyhow::anyhow!("{}: no PEM private key in it", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_secret_is_a_private_regular_file_of_root_or_the_station_reached_without_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("password");
        std::fs::write(&private, "s3cret\nignored\n").unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(secret_text(&private).unwrap(), "s3cret");

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        let refused = |path: &std::path::Path| secret_text(path).unwrap_err().to_string();
        assert!(refused(&link).contains("a symbolic link"), "{}", refused(&link));
        let folder_link = dir.path().join("folder");
        std::os::unix::fs::symlink(dir.path(), &folder_link).unwrap();
        let through = folder_link.join("password");
        assert!(refused(&through).contains("folder is a symbolic link"), "{}", refused(&through));
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(refused(&private).contains("readable by others (mode 644)"), "{}", refused(&private));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "  \nsecond line\n").unwrap();
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(refused(&empty).contains("first line is empty"), "{}", refused(&empty));
        assert!(refused(dir.path()).contains("not a regular file"), "{}", refused(dir.path()));

        // Owners: root or the station's own user (1000 here), never another.
        assert_eq!(secret_allowed(0o100600, 0, 1000, 10), Ok(()));
        assert_eq!(secret_allowed(0o100640, 1000, 1000, 10), Ok(()));
        assert!(secret_allowed(0o100600, 1001, 1000, 10).unwrap_err().contains("owned by user 1001"));
        assert!(secret_allowed(0o100600, 0, 1000, MAX_SECRET_BYTES + 1).unwrap_err().contains("over"));
    }
}
