//! The engine's lock order, checked in debug builds.
//!
//! Every engine lock has a [`Rank`]; a thread may take a lock only when every lock it holds
//! has a lower rank. A debug build keeps, per thread, the ranks held and panics naming both
//! locks when the order is broken, so any path that could deadlock against another fails
//! the test suite the first time it runs, not the first time two threads race. A release
//! build keeps nothing (the guard is zero-sized). docs/ARCHITECTURE.md lists the order.

use std::ops::{Deref, DerefMut};

/// Lock ranks, lowest first: take them in this order only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// `Shared::backend`: one commit (or unify, remount, label change) at a time.
    Backend = 10,
    /// `Shared::state`: the in-memory state, held shared (readers) or exclusive (changes);
    /// either way it counts as held (a thread never takes it twice, shared or not).
    State = 20,
    /// `ReadState::tables` (engine::data::read): read streams and pending read-aheads,
    /// taken under the state lock (shared) or alone, for a few map operations only.
    ReadTables = 30,
}

#[cfg(debug_assertions)]
thread_local! {
    static HELD: std::cell::RefCell<Vec<Rank>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Proof that this thread took a lock of `rank` in order; forgets it when dropped.
#[derive(Debug)]
pub struct Held {
    #[cfg(debug_assertions)]
    rank: Rank,
}

/// Records that this thread is about to take a lock of `rank`. Debug builds panic when the
/// thread holds a lock of the same or a higher rank.
pub fn acquire(rank: Rank) -> Held {
    #[cfg(debug_assertions)]
    {
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            if let Some(&top) = held.iter().max() {
                assert!(
                    top < rank,
                    "lock order broken: taking {rank:?} while holding {top:?} (docs/ARCHITECTURE.md, lock order)"
                );
            }
            held.push(rank);
        });
        Held { rank }
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = rank;
        Held {}
    }
}

#[cfg(debug_assertions)]
impl Drop for Held {
    fn drop(&mut self) {
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            if let Some(i) = held.iter().rposition(|r| *r == self.rank) {
                held.remove(i);
            }
        });
    }
}

/// A lock guard with its rank: the lock is released before the rank is forgotten.
#[derive(Debug)]
pub struct Ranked<G> {
    guard: G,
    _held: Held,
}

impl<G> Ranked<G> {
    /// Takes a lock of `rank` through `lock` after checking the order.
    pub fn take(rank: Rank, lock: impl FnOnce() -> G) -> Self {
        let held = acquire(rank);
        Ranked {
            guard: lock(),
            _held: held,
        }
    }
}

impl<G: Deref> Deref for Ranked<G> {
    type Target = G::Target;
    fn deref(&self) -> &G::Target {
        &self.guard
    }
}

impl<G: DerefMut> DerefMut for Ranked<G> {
    fn deref_mut(&mut self) -> &mut G::Target {
        &mut self.guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_in_order_pass_and_are_forgotten_when_dropped() {
        let backend = acquire(Rank::Backend);
        let state = acquire(Rank::State);
        drop(state);
        drop(backend);
        // Both forgotten: the state lock alone, then the backend after it is released.
        let state = acquire(Rank::State);
        drop(state);
        let _backend = acquire(Rank::Backend);
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "lock order broken: taking Backend while holding State")]
    fn backend_under_state_panics() {
        let _state = acquire(Rank::State);
        let _backend = acquire(Rank::Backend);
    }

    #[test]
    fn read_tables_under_state_pass() {
        let state = acquire(Rank::State);
        let tables = acquire(Rank::ReadTables);
        drop(tables);
        drop(state);
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "lock order broken: taking State while holding ReadTables")]
    fn state_under_read_tables_panics() {
        let _tables = acquire(Rank::ReadTables);
        let _state = acquire(Rank::State);
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "lock order broken: taking State while holding State")]
    fn state_twice_panics() {
        let _state = acquire(Rank::State);
        let _again = acquire(Rank::State);
    }
}
