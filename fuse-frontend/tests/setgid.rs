//! Story: a team directory is set-group-ID (`chmod 2777`, group root). Root and then
//! `nobody` (not in group root) create files, FIFOs, symlinks and subdirectories in it;
//! `nobody` also asks for a set-group-ID file (mode 2755), which the kernel strips because
//! nobody is not in the directory's group, and one in a directory of nobody's own group,
//! where the bit stays. ext4 gives every new inode the directory's group and every new
//! directory the S_ISGID bit; through FUSE the kernel leaves that to the daemon, so the
//! engine does it (engine/src/fs/setgid.rs). The same steps run on the host's ext4 next to
//! the image and on the mount, and the owners, groups and modes must be the same, also
//! after a remount.
//!
//! Needs setpriv, stat and python3 (for an open(O_CREAT) with mode 2755); a missing tool
//! skips the test, and under CI=true fails it.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Mount, have, sh};

const STEPS: &str = "
umask 022
mkdir team own
chown root:root team && chmod 2777 team
chown root:nogroup own && chmod 2777 own
cd team
: > f; mkfifo p; ln -s f l; mkdir d; mkdir d/e; : > d/e/g
setpriv --reuid=nobody --regid=nogroup --clear-groups sh -ec '
  : > nf; mkdir nd; : > nd/x
  python3 -c \"import os; os.close(os.open(\\\"sgid\\\", os.O_CREAT | os.O_WRONLY, 0o2755))\"
  cd ../own
  python3 -c \"import os; os.close(os.open(\\\"sgid\\\", os.O_CREAT | os.O_WRONLY, 0o2755))\"
  mkdir nd
'
";

const SHOW: &str = "stat -c '%n %A %U %G' team own team/* team/d/e team/d/e/g team/nd/x own/*";

#[test]
fn set_group_id_directories_pass_on_group_and_bit_as_on_ext4() {
    if !have(&["setpriv", "stat", "python3"]) {
        return;
    }
    let Some(mut m) = Mount::for_others("setgid", 64 << 20, &[]) else {
        return;
    };
    let host = m.scratch().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755)).unwrap();
    sh(&host, STEPS);
    sh(&m.dir, STEPS);
    let theirs = sh(&host, SHOW);
    let ours = sh(&m.dir, SHOW);
    // The comparison means something only if ext4 applied the rules.
    for line in [
        "team/d drwxr-sr-x root root\n",
        "team/nd drwxr-sr-x nobody root\n",
        "team/nf -rw-r--r-- nobody root\n",
        "team/sgid -rwxr-xr-x nobody root\n",
        "own/sgid -rwxr-sr-x nobody nogroup\n",
    ] {
        assert!(theirs.contains(line), "host ext4 lacks {line:?}:\n{theirs}");
    }
    assert_eq!(ours, theirs, "tuxfs (left) and host ext4 (right) differ");
    m.remount();
    assert_eq!(sh(&m.dir, SHOW), theirs, "after a remount");
    m.finish();
}
