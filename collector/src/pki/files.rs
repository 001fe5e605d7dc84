//! The CA directory: its file names, loading the CA, and crash-safe writes (temporary
//! file, fsync, rename, fsync of the directory).

use super::signer::random_bytes;
use super::*;

pub(super) const KEY_FILE_MODE: u32 = 0o600;

pub(super) const CERT_FILE_MODE: u32 = 0o644;

pub(super) const PRIVATE_DIR_MODE: u32 = 0o700;

pub(super) const PUBLIC_DIR_MODE: u32 = 0o755;

/// File names inside a CA directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaDir {
    dir: PathBuf,
}

impl CaDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR/ca.pem`: the CA certificate, the trust anchor of agents and collector.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `DIR/ca.key`: the CA private key.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// `DIR/collector.pem`: the collector's server certificate.
    pub fn collector_cert(&self) -> PathBuf {
        self.dir.join("collector.pem")
    }

    /// `DIR/collector.key`: the collector's private key.
    pub fn collector_key(&self) -> PathBuf {
        self.dir.join("collector.key")
    }
}

/// Reads `ca.pem` (as DER) and `ca.key`, and checks that they belong together.
pub(super) fn load_ca(files: &CaDir) -> Result<(CertificateDer<'static>, KeyPair), PkiError> {
    let read = |path: PathBuf| match fs::read_to_string(&path) {
        Ok(text) => Ok((path, text)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            Err(PkiError::CaMissing { dir: files.dir().to_path_buf() })
        }
        Err(source) => Err(PkiError::Io { path, source }),
    };
    let (cert_path, cert_pem) = read(files.ca_cert())?;
    let (key_path, key_pem) = read(files.ca_key())?;

    let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|error| {
        PkiError::CaInvalid { path: cert_path.clone(), reason: format!("no PEM certificate: {error}") }
    })?;
    let key = KeyPair::from_pem(&key_pem).map_err(|error| PkiError::CaInvalid {
        path: key_path,
        reason: format!("no usable private key: {error}"),
    })?;

    let (_, certificate) = x509_parser::parse_x509_certificate(&cert_der)
        .map_err(|error| PkiError::CaInvalid { path: cert_path.clone(), reason: error.to_string() })?;
    if !certificate.is_ca() {
        return Err(PkiError::CaInvalid { path: cert_path, reason: "not a CA certificate".to_owned() });
    }
    // Signing with a key that is not the certificate's would issue certificates that no
    // peer accepts; say so now rather than at the first handshake.
    if certificate.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(PkiError::CaInvalid {
            path: cert_path,
            reason: "the certificate does not match ca.key".to_owned(),
        });
    }
    Ok((cert_der, key))
}

pub(super) fn create_dir(dir: &Path, mode: u32) -> Result<(), PkiError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, mode);
    #[cfg(not(unix))]
    let _ = mode;
    builder.create(dir).map_err(|source| PkiError::Io { path: dir.to_path_buf(), source })
}

pub(super) fn create_parent_dir(file: &Path, mode: u32) -> Result<(), PkiError> {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => create_dir(parent, mode),
        _ => Ok(()),
    }
}

/// Writes `contents` to `path` with exactly `mode` (whatever the umask), all or nothing:
/// temporary file in the same directory, fsync, rename, fsync of the directory.
pub(super) fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PkiError::Io { path, source }
    };
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| PkiError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    let suffix: String = random_bytes::<8>()?.iter().map(|byte| format!("{byte:02x}")).collect();
    let temporary = parent.join(format!(".{}.{suffix}.tmp", file_name.to_string_lossy()));

    let written = write_new_file(&temporary, contents, mode)
        .and_then(|()| fs::rename(&temporary, path))
        .map_err(io_error(path));
    if written.is_err() {
        // Best effort: the error that matters is the one already in `written`.
        let _ = fs::remove_file(&temporary);
        return written;
    }
    sync_dir(parent).map_err(io_error(parent))
}

pub(super) fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        // Created 0600 at most, so a key is never readable by others, not even briefly;
        // then set to exactly `mode`, which the umask could have narrowed.
        options.mode(mode & KEY_FILE_MODE);
        let mut file = options.open(path)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        let mut file = options.open(path)?;
        file.write_all(contents)?;
        file.sync_all()
    }
}

/// Makes a rename in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
