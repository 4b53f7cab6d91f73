//! Describing the machine a benchmark ran on, printed with every table.

use std::path::Path;

/// `nproc`, kernel release and the file system holding `dir`.
pub fn describe(dir: &Path) -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel =
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_else(|_| "unknown".into());
    let (fs, source) = filesystem_of(dir).unwrap_or_else(|| ("unknown".into(), "unknown".into()));
    format!(
        "machine: nproc {nproc}, kernel {}, {} is on {fs} ({source})",
        kernel.trim(),
        dir.display()
    )
}

/// Named facts about the machine: kernel, CPU, memory, and the disk holding `dir` (or the
/// --device).
pub fn details(dir: &Path, device: Option<&Path>) -> Vec<(String, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_string(), |(_, v)| v.trim().to_string());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (fs, source) = filesystem_of(dir).unwrap_or_else(|| ("unknown".into(), "unknown".into()));
    let disk_of = device.map_or(source.clone(), |d| d.display().to_string());
    vec![
        (
            "kernel".into(),
            read("/proc/sys/kernel/osrelease").trim().to_string(),
        ),
        ("cpu".into(), format!("{cpu} ({nproc} online)")),
        (
            "memory".into(),
            format!("{:.1} GiB", mem_kib as f64 / (1 << 20) as f64),
        ),
        ("disk".into(), disk_model(&disk_of)),
        (
            "images".into(),
            match device {
                Some(d) => format!("partition {}", d.display()),
                None => format!("{} on {fs} ({source})", dir.display()),
            },
        ),
    ]
}

/// "vendor model" of the whole disk holding block device `source` (a partition's parent).
fn disk_model(source: &str) -> String {
    let name = Path::new(source)
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    if name.is_empty() {
        return format!("unknown ({source})");
    }
    let class = Path::new("/sys/class/block").join(&name);
    let mut dev = class.canonicalize().unwrap_or(class);
    if dev.join("partition").exists() {
        dev = dev.parent().map(Path::to_path_buf).unwrap_or(dev);
    }
    let attr = |a: &str| {
        std::fs::read_to_string(dev.join("device").join(a))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let (vendor, model) = (attr("vendor"), attr("model"));
    let disk = dev
        .file_name()
        .map_or(name.clone(), |n| n.to_string_lossy().into_owned());
    let size_gb = std::fs::read_to_string(dev.join("size"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(String::new(), |sectors| {
            format!(", {} GB", sectors * 512 / 1_000_000_000)
        });
    let rotational = std::fs::read_to_string(dev.join("queue/rotational")).unwrap_or_default();
    let kind = if rotational.trim() == "1" {
        "rotational"
    } else {
        "non-rotational"
    };
    // PCI vendor 0x1af4 is virtio: a virtual disk whose model the guest cannot see.
    let vendor = if vendor == "0x1af4" {
        "virtio".to_string()
    } else {
        vendor
    };
    let what = format!("{vendor} {model}").trim().to_string();
    let what = if what.is_empty() {
        "model not reported".into()
    } else {
        what
    };
    format!("{disk}: {what}{size_gb}, {kind}")
}

/// File system type and source device of the mount holding `dir` (the longest mount point
/// that is a prefix of its canonical path).
fn filesystem_of(dir: &Path) -> Option<(String, String)> {
    let dir = dir.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mut best: Option<(usize, String, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [source, point, fstype, ..] = f[..] else {
            continue;
        };
        let longer = best.as_ref().is_none_or(|(len, _, _)| point.len() > *len);
        if dir.starts_with(point) && longer {
            best = Some((point.len(), fstype.to_string(), source.to_string()));
        }
    }
    best.map(|(_, fs, source)| (fs, source))
}

#[cfg(test)]
mod tests {
    #[test]
    fn details_name_kernel_cpu_memory_disk() {
        let d = super::details(std::path::Path::new("/"), None);
        let keys: Vec<&str> = d.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["kernel", "cpu", "memory", "disk", "images"]);
        assert!(!d[0].1.is_empty());
    }
}
