//! Story: a program opens an O_TMPFILE in a directory, writes its content, and links it in
//! under a name once it is complete (the atomic-create pattern): before the link no name
//! shows it and the directory is unchanged; after it, the file is an ordinary file with one
//! link. A second tmpfile is never linked: its last close frees it. A third is open when
//! the machine crashes (after a commit): the next mount frees it as an orphan. A linked
//! tmpfile unlinked again while open cannot be linked back (ENOENT), nor can an ordinary
//! unlinked open file. fsck finds the image clean after each step.

use tuxfs_engine::Errno;
use tuxfs_tests::fixture::{SUPERUSER as ME, fsck_clean, mem_device, mount_default};

const ROOT: u64 = 1;

fn errno<T>(r: tuxfs_engine::Result<T>) -> Option<Errno> {
    r.err().map(|e| e.errno())
}

#[test]
fn tmpfiles_link_in_or_vanish() {
    let dev = mem_device(4096, 4096);
    let fs = mount_default(&dev);
    let dir = fs.mkdir(ROOT, b"d", 0o755, ME).expect("mkdir");
    let t = fs
        .tmpfile_umask(dir.ino, 0o666, 0o022, ME)
        .expect("tmpfile");
    assert_eq!((t.nlink, t.perm), (0, 0o644));
    fs.write(t.ino, 0, b"complete content", false)
        .expect("write");
    assert_eq!(
        fs.readdir(dir.ino, 0, 10).expect("readdir").len(),
        2,
        ". and .. only"
    );
    assert_eq!(fs.getattr(dir.ino).expect("dir").mtime, dir.mtime);
    let named = fs.link(t.ino, dir.ino, b"final").expect("link the tmpfile");
    assert_eq!(named.nlink, 1);
    fs.release(t.ino).expect("close");
    assert_eq!(fs.lookup(dir.ino, b"final").expect("lookup").ino, t.ino);
    assert_eq!(fs.read(t.ino, 0, 100).expect("read"), b"complete content");

    // Never linked: gone at the last close.
    let gone = fs.tmpfile_umask(dir.ino, 0o600, 0, ME).expect("tmpfile");
    fs.write(gone.ino, 0, &[7u8; 50_000], false).expect("write");
    fs.release(gone.ino).expect("close");
    assert_eq!(errno(fs.getattr(gone.ino)), Some(Errno::NoEntry));

    // Unlinked again while open: not linkable any more; nor is an unlinked open file.
    let again = fs.tmpfile_umask(dir.ino, 0o600, 0, ME).expect("tmpfile");
    fs.link(again.ino, dir.ino, b"again").expect("link");
    fs.unlink(dir.ino, b"again").expect("unlink");
    assert_eq!(
        errno(fs.link(again.ino, dir.ino, b"back")),
        Some(Errno::NoEntry)
    );
    fs.release(again.ino).expect("close");
    let plain = fs.create(dir.ino, b"plain", 0o644, ME).expect("create");
    fs.unlink(dir.ino, b"plain").expect("unlink");
    assert_eq!(
        errno(fs.link(plain.ino, dir.ino, b"back")),
        Some(Errno::NoEntry)
    );
    fs.release(plain.ino).expect("close");
    // A tmpfile in a removed directory: ENOENT; in a non-directory: ENOTDIR.
    let gone_dir = fs.mkdir(ROOT, b"gone", 0o755, ME).expect("mkdir");
    fs.rmdir(ROOT, b"gone").expect("rmdir");
    assert_eq!(
        errno(fs.tmpfile_umask(gone_dir.ino, 0o600, 0, ME)),
        Some(Errno::NoEntry)
    );
    assert_eq!(
        errno(fs.tmpfile_umask(t.ino, 0o600, 0, ME)),
        Some(Errno::NotDir)
    );
    // A name that exists: EEXIST, and the tmpfile stays linkable.
    let busy = fs.tmpfile_umask(dir.ino, 0o600, 0, ME).expect("tmpfile");
    assert_eq!(
        errno(fs.link(busy.ino, dir.ino, b"final")),
        Some(Errno::Exists)
    );
    fs.link(busy.ino, dir.ino, b"second")
        .expect("link under a free name");
    fs.release(busy.ino).expect("close");
    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());

    // A crash with a tmpfile open: the next mount frees it.
    let fs = mount_default(&dev);
    let open = fs.tmpfile_umask(dir.ino, 0o600, 0, ME).expect("tmpfile");
    fs.write(open.ino, 0, &[1u8; 20_000], false).expect("write");
    fs.fsync(open.ino, false).expect("fsync");
    drop(fs); // no unmount: as a crash after the commit
    let fs = mount_default(&dev);
    assert_eq!(fs.stats().orphans_destroyed, 1);
    assert_eq!(errno(fs.getattr(open.ino)), Some(Errno::NoEntry));
    assert_eq!(fs.read(t.ino, 0, 100).expect("read"), b"complete content");
    fs.unmount().expect("unmount");
    fsck_clean(dev.as_ref());
}
