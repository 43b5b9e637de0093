//! The process allocator: mimalloc (see `main.rs`), tuned for a small, long-running agent.
//!
//! mimalloc commits its arenas eagerly on systems that overcommit, which costs a site's capture
//! agent about 20 MiB of resident memory for nothing; committing on demand keeps the agent
//! within its memory budget at the same speed (measured with `benches/capture.rs`). The option
//! must be set before the first allocation creates an arena, so it is set by a constructor
//! that runs before `main` (the standard library allocates before `main` runs).

/// `mi_option_arena_eager_commit` in mimalloc's `mi_option_t` (include/mimalloc.h): the same
/// index in 2.x and in 3.x, which libmimalloc-sys builds by default.
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

extern "C" fn commit_arenas_on_demand() {
    // SAFETY: mi_option_set only stores an option value; the option index is the one mimalloc
    // (2.x and 3.x) defines for arena eager commit, and 0 is a valid value for it ("never").
    unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) };
}

#[used]
#[unsafe(link_section = ".init_array")]
static CONFIGURE_BEFORE_MAIN: extern "C" fn() = commit_arenas_on_demand;

/// Makes sure this module (and its constructor) is linked into the program.
pub fn configure() {
    let _ = &CONFIGURE_BEFORE_MAIN;
}
