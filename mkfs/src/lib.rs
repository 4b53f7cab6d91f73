//! mkfs.tuxfs as a library: argument values (sizes, UUIDs), recognising filesystem
//! signatures that must not be overwritten without `--force`, and running the engine's
//! `mkfs::format_device`.

pub mod signature;

use std::path::Path;

use tuxfs_engine::dev::{BlockDevice, DeviceKind, OpenOptions, open_file, read_at};
use tuxfs_engine::format::{BLOCK_SIZE_DEFAULT, Superblock};
use tuxfs_engine::mkfs::{MkfsParams, blocks_for_size, format_device, layout};

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: std::path::PathBuf,
    pub size: Option<u64>,
    pub block_size: u32,
    pub label: String,
    pub uuid: Option<[u8; 16]>,
    pub force: bool,
    pub discard: bool,
}

impl Request {
    /// A request with defaults for `path`.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        Request {
            path: path.into(),
            size: None,
            block_size: BLOCK_SIZE_DEFAULT,
            label: String::new(),
            uuid: None,
            force: false,
            discard: false,
        }
    }
}

/// Parses a size: bytes, or a number with K, M, G, T (binary units, optional "iB"/"B").
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (examples: 4096, 64M, 2G)"))?;
    let shift = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use K, M, G, T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Parses a UUID in the usual 8-4-4-4-12 hexadecimal form.
pub fn parse_uuid(s: &str) -> Result<[u8; 16], String> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let groups: Vec<usize> = s.split('-').map(str::len).collect();
    if hex.len() != 32 || groups != [8, 4, 4, 4, 12] {
        return Err(format!(
            "'{s}' is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
        ));
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = hex.get(2 * i..2 * i + 2).ok_or("short UUID")?;
        *byte = u8::from_str_radix(pair, 16)
            .map_err(|_| format!("'{s}' has a non-hexadecimal digit"))?;
    }
    Ok(out)
}

/// Formats a UUID in the usual 8-4-4-4-12 form.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..].concat()
    )
}

/// 16 random bytes from the kernel.
fn random16() -> Result<[u8; 16], String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(b)
}

/// A random UUID of version 4.
fn random_uuid() -> Result<[u8; 16], String> {
    let mut u = random16()?;
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    Ok(u)
}

/// Refuses to overwrite a recognisable filesystem unless forced.
fn check_signature(dev: &dyn BlockDevice, force: bool) -> Result<(), String> {
    let len = dev.size_bytes().min(signature::PROBE_BYTES as u64) / 512 * 512;
    if len == 0 {
        return Ok(());
    }
    let head = read_at(dev, 0, len as usize).map_err(|e| format!("cannot read the device: {e}"))?;
    match signature::detect(&head) {
        Some(found) if !force => Err(format!(
            "{found}; refusing to overwrite it (use --force to format anyway)"
        )),
        _ => Ok(()),
    }
}

/// Block count at which [`run`] validates the layout before creating anything.
const VALIDATE_BLOCKS_MAX: u64 = 1 << 16;

/// Creates the filesystem. Returns the new superblock.
///
/// Everything that can be checked without the device (block size, label, size) is checked
/// before anything is created. When `path` does not exist, mkfs creates the file itself
/// (`O_CREAT|O_EXCL`, so it knows the file is its own) and removes it again if anything
/// after that fails, so a retry starts from nothing. An existing file or device is never
/// removed.
pub fn run(req: &Request) -> Result<Superblock, String> {
    let path: &Path = &req.path;
    let uuid = match req.uuid {
        Some(u) => u,
        None => random_uuid()?,
    };
    let hash_seed = random16()?;
    let params = |size: u64| MkfsParams {
        block_size: req.block_size,
        block_count: blocks_for_size(size, req.block_size),
        label: req.label.clone(),
        uuid,
        hash_seed,
        now: tuxfs_engine::fs::now(),
        // SAFETY: getuid/getgid have no preconditions and cannot fail.
        uid: unsafe { libc::getuid() },
        // SAFETY: as above.
        gid: unsafe { libc::getgid() },
    };
    match req.size {
        Some(size) => {
            // The layout's checks (block size, label, too few blocks) at a bounded block
            // count: a count past the bound passes the size checks anyway, and the real
            // layout of a huge filesystem is only worth computing once the file exists.
            let mut probe = params(size);
            probe.block_count = probe.block_count.min(VALIDATE_BLOCKS_MAX);
            layout(&probe).map_err(|e| format!("cannot create the filesystem: {e}"))?;
        }
        None if !path.exists() => {
            return Err(format!(
                "{} does not exist; give --size to create it",
                path.display()
            ));
        }
        None => {}
    }
    let created = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
    };
    let result = format_path(req, created, &params);
    if result.is_err() && created {
        // Only the file this run created; a failed mkfs leaves nothing behind.
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Opens (and for a new file sizes) `req.path` and formats it.
fn format_path(
    req: &Request,
    created: bool,
    params: &dyn Fn(u64) -> MkfsParams,
) -> Result<Superblock, String> {
    let path: &Path = &req.path;
    let opts = OpenOptions {
        kind: DeviceKind::Auto,
        create_size: req.size,
        ..OpenOptions::default()
    };
    let dev = open_file(path, &opts).map_err(|e| match (&e, req.size) {
        (tuxfs_engine::Error::Io { .. }, Some(size)) if created => format!(
            "cannot make {} a file of {size} bytes (does the filesystem holding it allow files that large?): {e}",
            path.display()
        ),
        _ => format!("cannot open {}: {e}", path.display()),
    })?;
    let size = req.size.unwrap_or(dev.size_bytes());
    if size > dev.size_bytes() {
        return Err(format!(
            "--size {size} is larger than {} ({} bytes)",
            path.display(),
            dev.size_bytes()
        ));
    }
    if !created {
        check_signature(dev.as_ref(), req.force)?;
    }
    format_device(dev.as_ref(), &params(size), req.discard)
        .map_err(|e| format!("cannot create the filesystem: {e}"))
}
