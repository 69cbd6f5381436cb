//! Where switchboard meets the operating system: how threads are made
//! (named, with small stacks, sized against the kernel's limits), how
//! memory is handed back (glibc's malloc settings, freed pages returned),
//! how busy the CPUs are, and a write that never waits.
//!
//! The only `unsafe` code in the crate lives here, three calls in all
//! (`threads::size_futex_table`, `memory::release_free_pages`,
//! `send::send_now`), each with a `// SAFETY:` comment. Everything else is safe Rust over std and crossbeam.

pub mod cpu;
pub mod memory;
pub mod send;
pub mod threads;
