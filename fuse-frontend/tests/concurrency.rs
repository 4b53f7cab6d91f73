//! Story: eight threads write at once, each to a file of its own and all of them to one
//! shared file at different offsets, with random request sizes. Afterwards every file holds
//! exactly what its writers wrote, before and after a remount.

mod common;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use common::{Mount, Rng};

const THREADS: usize = 8;
/// Bytes each thread writes to its own file and to its slice of the shared file.
const PER_THREAD: usize = 4 << 20;

#[test]
fn eight_threads_write_separate_and_shared_files() {
    let Some(mut m) = Mount::with_options("threads", 512 << 20, &["threads=4"]) else {
        return;
    };
    let mut seeder = Rng::from_env("eight_threads_write_separate_and_shared_files");
    let shared_path = m.path("shared");
    let shared = Arc::new(std::fs::File::create(&shared_path).expect("create shared"));
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let seed = seeder.next_u64();
        let own = m.path(format!("own-{t}"));
        let shared = Arc::clone(&shared);
        handles.push(std::thread::spawn(move || {
            let mut rng = Rng::new(seed);
            let data = rng.bytes(PER_THREAD);
            let mut f = std::fs::File::create(&own).expect("create own");
            let base = (t * PER_THREAD) as u64;
            let mut done = 0;
            while done < PER_THREAD {
                let len = (rng.below(256 << 10) as usize + 1).min(PER_THREAD - done);
                f.write_all(&data[done..done + len]).expect("write own");
                shared
                    .write_all_at(&data[done..done + len], base + done as u64)
                    .expect("pwrite shared");
                done += len;
            }
            data
        }));
    }
    let written: Vec<Vec<u8>> = handles
        .into_iter()
        .map(|h| h.join().expect("writer"))
        .collect();
    drop(shared);
    let check = |m: &Mount| {
        let all = std::fs::read(&shared_path).expect("read shared");
        assert_eq!(all.len(), THREADS * PER_THREAD);
        for (t, data) in written.iter().enumerate() {
            let own = std::fs::read(m.path(format!("own-{t}"))).expect("read own");
            assert!(own == *data, "own file of thread {t} differs");
            let slice = &all[t * PER_THREAD..(t + 1) * PER_THREAD];
            assert!(slice == &data[..], "shared slice of thread {t} differs");
        }
    };
    check(&m);
    m.remount_and_verify();
    check(&m);
    m.finish();
}
