//! The system calls the differential suite makes, as thin wrappers that return the errno
//! on failure: the suite compares errnos, so nothing here interprets or retries.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A failed call: the raw errno.
pub type SysResult<T> = Result<T, i32>;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn cpath(path: &Path) -> SysResult<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)
}

fn cbytes(bytes: &[u8]) -> SysResult<CString> {
    CString::new(bytes).map_err(|_| libc::EINVAL)
}

fn check(rc: libc::c_int) -> SysResult<()> {
    if rc < 0 { Err(errno()) } else { Ok(()) }
}

fn check_len(rc: libc::ssize_t) -> SysResult<usize> {
    usize::try_from(rc).map_err(|_| errno())
}

/// open(2).
pub fn open(path: &Path, flags: i32, mode: u32) -> SysResult<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: a NUL-terminated path we own; the mode is passed as the variadic argument.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: open just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// pread(2) of at most `len` bytes at `off`.
pub fn pread(fd: &OwnedFd, off: i64, len: usize) -> SysResult<Vec<u8>> {
    let mut buf = vec![0u8; len];
    // SAFETY: the buffer is `len` bytes long and we own it.
    let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), len, off) };
    buf.truncate(check_len(n)?);
    Ok(buf)
}

/// read(2) of at most `len` bytes at the file position.
pub fn read(fd: &OwnedFd, len: usize) -> SysResult<Vec<u8>> {
    let mut buf = vec![0u8; len];
    // SAFETY: the buffer is `len` bytes long and we own it.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), len) };
    buf.truncate(check_len(n)?);
    Ok(buf)
}

/// write(2); the count written.
pub fn write(fd: &OwnedFd, data: &[u8]) -> SysResult<usize> {
    // SAFETY: the buffer is `data.len()` bytes we own.
    check_len(unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) })
}

/// pwrite(2); the count written.
pub fn pwrite(fd: &OwnedFd, off: i64, data: &[u8]) -> SysResult<usize> {
    // SAFETY: the buffer is `data.len()` bytes we own.
    check_len(unsafe { libc::pwrite(fd.as_raw_fd(), data.as_ptr().cast(), data.len(), off) })
}

/// lseek(2); the new offset.
pub fn lseek(fd: &OwnedFd, off: i64, whence: i32) -> SysResult<i64> {
    // SAFETY: plain integer arguments on a descriptor we own.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off, whence) };
    if r < 0 { Err(errno()) } else { Ok(r) }
}

/// posix_fadvise(POSIX_FADV_DONTNEED) of the whole file: the kernel drops the file's clean
/// cached pages (dirty ones are only queued for writeback and stay).
pub fn drop_clean_pages(fd: &OwnedFd) -> SysResult<()> {
    // SAFETY: plain integer arguments on a descriptor we own.
    match unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) } {
        0 => Ok(()),
        e => Err(e),
    }
}

/// ftruncate(2).
pub fn ftruncate(fd: &OwnedFd, len: i64) -> SysResult<()> {
    // SAFETY: plain integer arguments on a descriptor we own.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })
}

/// truncate(2).
pub fn truncate(path: &Path, len: i64) -> SysResult<()> {
    let c = cpath(path)?;
    // SAFETY: a NUL-terminated path we own.
    check(unsafe { libc::truncate(c.as_ptr(), len) })
}

/// fsync(2) or fdatasync(2).
pub fn fsync(fd: &OwnedFd, data_only: bool) -> SysResult<()> {
    // SAFETY: a descriptor we own.
    check(unsafe {
        if data_only {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
}

/// fallocate(2).
pub fn fallocate(fd: &OwnedFd, mode: i32, off: i64, len: i64) -> SysResult<()> {
    // SAFETY: plain integer arguments on a descriptor we own.
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off, len) })
}

/// syncfs(2) of the filesystem holding `path`.
pub fn syncfs(path: &Path) -> SysResult<()> {
    let fd = open(path, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    // SAFETY: a descriptor we own.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) })
}

/// fstat(2).
pub fn fstat(fd: RawFd) -> SysResult<libc::stat> {
    // SAFETY: an all-zero stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer.
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// stat(2) when `follow`, else lstat(2).
pub fn stat(path: &Path, follow: bool) -> SysResult<libc::stat> {
    let c = cpath(path)?;
    // SAFETY: an all-zero stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid, writable stat buffer.
    check(unsafe {
        if follow {
            libc::stat(c.as_ptr(), &mut st)
        } else {
            libc::lstat(c.as_ptr(), &mut st)
        }
    })?;
    Ok(st)
}

/// mkdir(2).
pub fn mkdir(path: &Path, mode: u32) -> SysResult<()> {
    let c = cpath(path)?;
    // SAFETY: a NUL-terminated path we own.
    check(unsafe { libc::mkdir(c.as_ptr(), mode) })
}

/// rmdir(2).
pub fn rmdir(path: &Path) -> SysResult<()> {
    let c = cpath(path)?;
    // SAFETY: a NUL-terminated path we own.
    check(unsafe { libc::rmdir(c.as_ptr()) })
}

/// unlink(2).
pub fn unlink(path: &Path) -> SysResult<()> {
    let c = cpath(path)?;
    // SAFETY: a NUL-terminated path we own.
    check(unsafe { libc::unlink(c.as_ptr()) })
}

/// renameat2(2) with `flags` (RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT).
pub fn rename(from: &Path, to: &Path, flags: u32) -> SysResult<()> {
    let (a, b) = (cpath(from)?, cpath(to)?);
    // SAFETY: NUL-terminated paths we own; AT_FDCWD because both paths are absolute.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    })
}

/// link(2) (linkat without AT_SYMLINK_FOLLOW: a symlink is linked itself).
pub fn link(from: &Path, to: &Path) -> SysResult<()> {
    let (a, b) = (cpath(from)?, cpath(to)?);
    // SAFETY: NUL-terminated paths we own.
    check(unsafe { libc::link(a.as_ptr(), b.as_ptr()) })
}

/// symlink(2).
pub fn symlink(target: &[u8], path: &Path) -> SysResult<()> {
    let (t, p) = (cbytes(target)?, cpath(path)?);
    // SAFETY: NUL-terminated strings we own.
    check(unsafe { libc::symlink(t.as_ptr(), p.as_ptr()) })
}

/// readlink(2) into a PATH_MAX buffer.
pub fn readlink(path: &Path) -> SysResult<Vec<u8>> {
    let c = cpath(path)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: the buffer is `buf.len()` bytes long and we own it.
    let n = unsafe { libc::readlink(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    buf.truncate(check_len(n)?);
    Ok(buf)
}

/// chmod(2) (follows symlinks).
pub fn chmod(path: &Path, mode: u32) -> SysResult<()> {
    let c = cpath(path)?;
    // SAFETY: a NUL-terminated path we own.
    check(unsafe { libc::chmod(c.as_ptr(), mode) })
}

/// lchown(2); `u32::MAX` leaves the id as it is.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> SysResult<()> {
    let c = cpath(path)?;
    // SAFETY: a NUL-terminated path we own.
    check(unsafe { libc::lchown(c.as_ptr(), uid, gid) })
}

/// utimensat(2) with `times` [atime, mtime] (UTIME_NOW / UTIME_OMIT in `tv_nsec` allowed).
pub fn utimensat(path: &Path, times: [(i64, i64); 2], nofollow: bool) -> SysResult<()> {
    let c = cpath(path)?;
    let ts = times.map(|(sec, nsec)| libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    });
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    // SAFETY: a NUL-terminated path and an array of two timespecs we own.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), flags) })
}

/// mknod(2) of a FIFO or socket (`mode` includes the file type).
pub fn mknod(path: &Path, mode: u32) -> SysResult<()> {
    let c = cpath(path)?;
    // SAFETY: a NUL-terminated path we own.
    check(unsafe { libc::mknod(c.as_ptr(), mode, 0) })
}

/// lsetxattr(2).
pub fn lsetxattr(path: &Path, name: &[u8], value: &[u8], flags: i32) -> SysResult<()> {
    let (c, n) = (cpath(path)?, cbytes(name)?);
    // SAFETY: NUL-terminated strings and a value buffer we own, with its length.
    check(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
}

/// lgetxattr(2) into a buffer of `size` bytes (0: a size query, returned as zeros of that
/// length so the two sides compare by length).
pub fn lgetxattr(path: &Path, name: &[u8], size: usize) -> SysResult<Vec<u8>> {
    let (c, n) = (cpath(path)?, cbytes(name)?);
    let mut buf = vec![0u8; size];
    let ptr = if size == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    // SAFETY: `ptr` is null with size 0, or points at `size` bytes we own.
    let got = check_len(unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), ptr, size) })?;
    if size == 0 {
        return Ok(vec![0u8; got]);
    }
    buf.truncate(got);
    Ok(buf)
}

/// llistxattr(2) into a buffer of `size` bytes; the names (sorted: the order of the list is
/// the filesystem's own) or, for a size query, the length as that many zeros.
pub fn llistxattr(path: &Path, size: usize) -> SysResult<Vec<Vec<u8>>> {
    let c = cpath(path)?;
    let mut buf = vec![0u8; size];
    let ptr = if size == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    // SAFETY: `ptr` is null with size 0, or points at `size` bytes we own.
    let got = check_len(unsafe { libc::llistxattr(c.as_ptr(), ptr, size) })?;
    if size == 0 {
        return Ok(vec![vec![0u8; got]]);
    }
    buf.truncate(got);
    let mut names: Vec<Vec<u8>> = buf
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    names.sort();
    Ok(names)
}

/// lremovexattr(2).
pub fn lremovexattr(path: &Path, name: &[u8]) -> SysResult<()> {
    let (c, n) = (cpath(path)?, cbytes(name)?);
    // SAFETY: NUL-terminated strings we own.
    check(unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) })
}

/// The names of a directory (without `.` and `..`), sorted.
pub fn readdir(path: &Path) -> SysResult<Vec<Vec<u8>>> {
    let rd = std::fs::read_dir(path).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        names.push(entry.file_name().as_bytes().to_vec());
    }
    names.sort();
    Ok(names)
}

/// The name of an errno, for messages.
pub fn errno_name(e: i32) -> String {
    let known = [
        (libc::ENOENT, "ENOENT"),
        (libc::EEXIST, "EEXIST"),
        (libc::ENOTDIR, "ENOTDIR"),
        (libc::EISDIR, "EISDIR"),
        (libc::ENOTEMPTY, "ENOTEMPTY"),
        (libc::EINVAL, "EINVAL"),
        (libc::ENAMETOOLONG, "ENAMETOOLONG"),
        (libc::EBADF, "EBADF"),
        (libc::EPERM, "EPERM"),
        (libc::EACCES, "EACCES"),
        (libc::ELOOP, "ELOOP"),
        (libc::ENODATA, "ENODATA"),
        (libc::ERANGE, "ERANGE"),
        (libc::ENOSPC, "ENOSPC"),
        (libc::EFBIG, "EFBIG"),
        (libc::EXDEV, "EXDEV"),
        (libc::ENXIO, "ENXIO"),
        (libc::EAGAIN, "EAGAIN"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
        (libc::ESPIPE, "ESPIPE"),
        (libc::EMLINK, "EMLINK"),
        (libc::EIO, "EIO"),
        (libc::EBUSY, "EBUSY"),
        (libc::ETXTBSY, "ETXTBSY"),
    ];
    known
        .iter()
        .find(|(n, _)| *n == e)
        .map_or_else(|| format!("errno {e}"), |(_, s)| (*s).to_string())
}
