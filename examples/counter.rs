//! counter.rs: a named section shared by processes, through the crate's client API
//! (`sectionfs::client`: CreateFileMapping / OpenFileMapping / MapViewOfFile for Rust).
//!
//! ```sh
//! cargo run --example counter -- /mnt/sections Counter 1000
//! ```
//!
//! Same steps, output and lock as examples/counter.c (read its header), so C, Python and
//! Rust processes can share one counter:
//! 1. open-or-create: prints `status=created` or `status=already_exists`;
//! 2. the section is at least one page: a little-endian u64 counter at offset 0;
//! 3. grow to two pages, map only the new tail, write this pid at its start;
//! 4. ROUNDS times: take the section's lock, add one to the counter, release it.

use sectionfs::client::Section;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let rounds = match args.get(3).map(|r| r.parse::<u64>()) {
        Some(Ok(r)) if args.len() == 4 => r,
        _ => {
            eprintln!("usage: counter MOUNTPOINT NAME ROUNDS");
            return ExitCode::from(64);
        }
    };
    match run(&args[1], &args[2], rounds) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("counter: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(mount: &str, name: &str, rounds: u64) -> std::io::Result<()> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;

    // 1 and 2. CreateFileMapping(..., page, name) and GetLastError().
    let (section, created) = Section::create_or_open(mount, name, page)?;
    println!(
        "status={}",
        if created { "created" } else { "already_exists" }
    );
    let counter = section.map_range(0, page as usize)?;

    // 3. Grow, then map only the new tail.
    let size = section.grow(2 * page)?;
    let tail = section.map_range(page, page as usize)?;
    // SAFETY: the tail view is page-aligned and a page long; other processes only ever
    // store whole pids there too, so a torn value is the worst a race can give.
    unsafe {
        tail.as_mut_ptr()
            .cast::<u64>()
            .write_volatile(u64::from(std::process::id()).to_le())
    };
    println!("size={size}\ntail={page}+{page}");

    // 4. Add to the shared counter under the section's lock.
    let cell = counter.as_mut_ptr().cast::<u64>();
    let mut value = 0;
    for _ in 0..rounds.max(1) {
        let _lock = section.lock()?;
        // SAFETY: the view is page-aligned and at least 8 bytes; every process touches
        // the counter only while holding the section's lock.
        unsafe {
            value = u64::from_le(cell.read_volatile());
            if rounds > 0 {
                value += 1;
                cell.write_volatile(value.to_le());
            }
        }
    }
    println!("counter={value}");
    Ok(())
}
