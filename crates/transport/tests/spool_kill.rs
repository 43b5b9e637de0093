//! SIGKILL while capture writes the segment spool: no torn batch is ever accepted, and no
//! batch whose commit returned is ever lost.
//!
//! The test runs a copy of itself as the writer (selected by an environment variable), kills
//! it at varying moments, and checks the spool after each kill before writing on.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use tributary_transport::{Outbox, SegmentOutbox, SegmentSpool, Spool, SpooledBatch};

const SITE: &str = "clinic-1";
const WRITER_ENV: &str = "TRIBUTARY_SPOOL_KILL_WRITER";
/// Small segments, so kills also land around segment rolls.
const SEGMENT_BYTES: u64 = 256 << 10;

/// The batch at `sequence`: its length varies from a few bytes to about 100 KiB.
fn sealed(sequence: u64) -> Vec<u8> {
    let len = 1 + (sequence * 7919 % 100_000) as usize;
    (0..len)
        .map(|i| (i as u64 ^ sequence.wrapping_mul(31)) as u8)
        .collect()
}

/// The writer: resumes the spool (a staged leftover is discarded, as capture does when its
/// checkpoint does not cover it) and publishes batches from `first`, reporting each commit.
#[test]
fn writer_process() {
    let Ok(root) = std::env::var(WRITER_ENV) else {
        return;
    };
    let first: u64 = std::env::var("TRIBUTARY_SPOOL_KILL_FIRST")
        .unwrap()
        .parse()
        .unwrap();
    let mut outbox = SegmentOutbox::open(Path::new(&root), SITE, SEGMENT_BYTES).unwrap();
    for staged in outbox.staged().unwrap() {
        outbox.discard(&staged).unwrap();
    }
    for sequence in first.. {
        let staged = outbox.stage(1, sequence, &sealed(sequence)).unwrap();
        outbox.commit(&staged).unwrap();
        println!("committed {sequence}");
    }
}

#[test]
fn sigkill_never_tears_or_loses_a_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let mut next = 1u64;
    for round in 0..12u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "writer_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_ENV, tmp.path())
            .env("TRIBUTARY_SPOOL_KILL_FIRST", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Let a varying number of commits through, then kill mid-stream.
        let wanted = 5 + round * 13 % 40;
        let mut acknowledged = next - 1;
        while acknowledged < next - 1 + wanted {
            let line = lines.next().expect("the writer stopped").unwrap();
            if let Some(sequence) = line.strip_prefix("committed ") {
                acknowledged = sequence.parse().unwrap();
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();

        let spool = SegmentSpool::open(tmp.path(), SITE).unwrap();
        let listed = spool.committed_after(None, usize::MAX).unwrap();
        let positions: Vec<u64> = listed.iter().map(|b| b.sequence).collect();
        assert!(
            positions.iter().copied().eq(1..=positions.len() as u64),
            "round {round}: a gap in {positions:?}"
        );
        assert!(
            positions.len() as u64 >= acknowledged,
            "round {round}: batches up to {acknowledged} were acknowledged, {} survive",
            positions.len()
        );
        for batch in &listed {
            assert_eq!(
                spool.read(batch).unwrap(),
                sealed(batch.sequence),
                "round {round}: batch {} differs",
                batch.sequence
            );
        }
        next = positions.len() as u64 + 1;
    }
    // The spool stays writable and readable after all that.
    let mut outbox = SegmentOutbox::open(tmp.path(), SITE, SEGMENT_BYTES).unwrap();
    for staged in outbox.staged().unwrap() {
        outbox.discard(&staged).unwrap();
    }
    let staged = outbox.stage(1, next, &sealed(next)).unwrap();
    outbox.commit(&staged).unwrap();
    let spool = SegmentSpool::open(tmp.path(), SITE).unwrap();
    let last = SpooledBatch {
        epoch: 1,
        sequence: next,
    };
    assert_eq!(
        spool
            .committed_after(
                Some(SpooledBatch {
                    epoch: 1,
                    sequence: next - 1
                }),
                10
            )
            .unwrap(),
        vec![last]
    );
}
