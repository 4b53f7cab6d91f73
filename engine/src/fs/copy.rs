//! copy_file_range in the engine: the source's data is read and written into the
//! destination block by block under the state lock, without a round trip through the
//! kernel's page cache; holes (and unwritten extents) of the source stay holes in the
//! destination. The copy takes new blocks: sharing extents between files needs reference
//! counts the format does not have yet (a later format change, docs/SEMANTICS.md).
//!
//! Errors as the kernel's generic checks give them: flags other than 0 are EINVAL, a
//! directory is EISDIR, another non-regular file EINVAL, overlapping ranges of one file
//! EINVAL; a source offset at or past its end copies nothing.

use crate::format::inode::S_IFREG;
use crate::state::State;
use crate::{Errno, Result, data, inode};

use super::posix::{FILE_SIZE_MAX, now};
use super::space::{classify, zero_out};

/// Most bytes one call copies (the caller loops, as for any short copy): bounds the dirty
/// data and the time one call holds the state lock.
pub const COPY_MAX_BYTES: u64 = 8 << 20;

/// Largest piece read and written at once.
const PIECE_BYTES: u64 = 1 << 20;

#[allow(clippy::too_many_arguments)]
pub(super) fn copy_file_range(
    st: &mut State,
    ino_in: u64,
    off_in: u64,
    ino_out: u64,
    off_out: u64,
    len: u64,
    flags: u32,
) -> Result<u64> {
    if flags != 0 {
        return Err(Errno::Invalid.into());
    }
    let src = inode::get(st, ino_in)?;
    let dst = inode::get(st, ino_out)?;
    for i in [&src, &dst] {
        if i.is_dir() {
            return Err(Errno::IsDir.into());
        }
        if i.file_type() != S_IFREG {
            return Err(Errno::Invalid.into());
        }
    }
    super::flags::check_fixed(&dst)?;
    if off_in > i64::MAX as u64 || off_out > i64::MAX as u64 {
        return Err(Errno::Invalid.into());
    }
    if off_in >= src.size || len == 0 {
        return Ok(0);
    }
    let len = len.min(src.size - off_in).min(COPY_MAX_BYTES);
    if ino_in == ino_out && off_in < off_out + len && off_out < off_in + len {
        return Err(Errno::Invalid.into());
    }
    if off_out + len > FILE_SIZE_MAX {
        return Err(Errno::FileTooBig.into());
    }
    let bs = u64::from(st.bs());
    let mut copied = 0;
    while copied < len {
        let pos = off_in + copied;
        let (is_data, until) = classify(st, ino_in, pos / bs)?;
        let stop = until
            .saturating_mul(bs)
            .min(off_in + len)
            .min(pos + PIECE_BYTES);
        let n = stop - pos;
        let target = off_out + copied;
        let step = if is_data {
            data::read(st, ino_in, pos, n as u32, src.size)
                .and_then(|bytes| super::posix::write(st, ino_out, target, &bytes, false))
                .map(|_| ())
        } else {
            let mut out = inode::get(st, ino_out)?;
            zero_out(st, ino_out, &mut out, target, target + n)
                .and_then(|()| inode::put(st, ino_out, &out))
        };
        match step {
            Ok(()) => copied += n,
            // A short copy is a copy: report what was done, as write(2) does.
            Err(e) if e.errno() == Errno::NoSpace && copied > 0 => break,
            Err(e) => return Err(e),
        }
    }
    let mut out = inode::get(st, ino_out)?;
    let t = now();
    out.size = out.size.max(off_out + copied);
    (out.mtime, out.ctime) = (t, t);
    inode::put(st, ino_out, &out)?;
    Ok(copied)
}
