//! Story: a user who owns a set-group-ID file in a group they are not in runs
//! `setfacl -m u:root:r f`. On ext4 the setgid bit goes (a caller outside the group must
//! not keep a set-group-ID file of that group once its access changes); on tuxfs it must
//! go too. The kernel says so only through FUSE_SETXATTR_ACL_KILL_SGID, in the extended
//! setxattr header the vendored fuser parses once FUSE_SETXATTR_EXT is negotiated. The same
//! steps run on the host's ext4 next to the image, and the modes are compared.
//!
//! Needs setfacl/getfacl (package `acl`) and setpriv (scripts/deps installs them); a
//! missing tool skips the test, and under CI=true fails it.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Mount, have, sh};

/// Two setgid files owned by nobody: `out` in group root (which nobody is not in) and `in`
/// in group nogroup (nobody's own). Nobody, without supplementary groups or capabilities,
/// adds an ACL entry to each; then the modes, and the ACL of `out` as getfacl shows it.
const STEPS: &str = "
for f in out in; do : > $f; done
chown nobody:root out && chown nobody:nogroup in
chmod 2644 out in
for f in out in; do
  setpriv --reuid=nobody --regid=nogroup --clear-groups setfacl -m u:root:r $f
done
stat -c '%n %A' out in
getfacl -cn out
";

#[test]
fn setfacl_by_a_caller_outside_the_group_clears_setgid_as_on_ext4() {
    if !have(&["setfacl", "getfacl", "setpriv", "stat"]) {
        return;
    }
    let Some(m) = Mount::for_others("acl-sgid", 64 << 20, &[]) else {
        return;
    };
    let host = m.scratch().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755)).unwrap();
    let theirs = sh(&host, STEPS);
    let ours = sh(&m.dir, STEPS);
    // The comparison means something only if the host cleared the bit for `out` and kept
    // it for `in` (ext4 with ACLs).
    assert!(
        theirs.contains("out -rw-r--r--\n") && theirs.contains("in -rw-r-Sr--\n"),
        "host ext4 did not behave as expected:\n{theirs}"
    );
    assert!(theirs.contains("user:0:r--"), "host ACL:\n{theirs}");
    assert_eq!(ours, theirs, "tuxfs (left) and host ext4 (right) differ");
    m.finish();
}
