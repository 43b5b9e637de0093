use std::fs;
use std::path::Path;

use super::file::{list_segments, segment_name};
use super::*;
use crate::error::TransportError;
use crate::outbox::Outbox;
use crate::spool::{Spool, SpooledBatch};
use crate::staged_batch::StagedBatch;

const SITE: &str = "clinic-1";

fn sealed(sequence: u64) -> Vec<u8> {
    format!("sealed batch number {sequence} ")
        .repeat(1 + sequence as usize % 5)
        .into_bytes()
}

fn at(epoch: u64, sequence: u64) -> SpooledBatch {
    SpooledBatch { epoch, sequence }
}

fn publish(outbox: &mut SegmentOutbox, epoch: u64, sequence: u64) {
    let staged = outbox.stage(epoch, sequence, &sealed(sequence)).unwrap();
    outbox.commit(&staged).unwrap();
}

fn all(spool: &SegmentSpool) -> Vec<SpooledBatch> {
    spool.committed_after(None, usize::MAX).unwrap()
}

fn segment_path(root: &Path, number: u64) -> std::path::PathBuf {
    root.join(SITE).join(segment_name(number))
}

#[test]
fn committed_batches_are_listed_in_order_and_read_back_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let mut outbox = SegmentOutbox::open(tmp.path(), SITE, DEFAULT_SEGMENT_BYTES).unwrap();
    for sequence in 1..=5 {
        publish(&mut outbox, 1, sequence);
    }
    let staged = outbox.stage(1, 6, &sealed(6)).unwrap();
    let spool = SegmentSpool::open(tmp.path(), SITE).unwrap();
    let listed = all(&spool);
    assert_eq!(listed, (1..=5).map(|s| at(1, s)).collect::<Vec<_>>());
    for batch in &listed {
        assert_eq!(spool.read(batch).unwrap(), sealed(batch.sequence));
    }
    assert_eq!(
        spool.committed_after(Some(at(1, 2)), 2).unwrap(),
        vec![at(1, 3), at(1, 4)]
    );
    // The staged batch is invisible until committed.
    assert!(matches!(
        spool.read(&at(1, 6)),
        Err(TransportError::NotInSpool { .. })
    ));
    outbox.commit(&staged).unwrap();
    outbox.commit(&staged).unwrap();
    assert_eq!(all(&spool).last(), Some(&at(1, 6)));
    assert_eq!(spool.read(&at(1, 6)).unwrap(), sealed(6));
}

#[test]
fn discard_and_restage_leave_only_the_final_attempt() {
    let tmp = tempfile::tempdir().unwrap();
    let mut outbox = SegmentOutbox::open(tmp.path(), SITE, DEFAULT_SEGMENT_BYTES).unwrap();
    publish(&mut outbox, 1, 1);
    let length_after_one = fs::metadata(segment_path(tmp.path(), 1)).unwrap().len();
    let staged = outbox.stage(1, 2, b"first attempt").unwrap();
    assert_eq!(outbox.staged().unwrap(), vec![staged]);
    outbox.discard(&staged).unwrap();
    outbox.discard(&staged).unwrap();
    assert!(outbox.staged().unwrap().is_empty());
    assert_eq!(
        fs::metadata(segment_path(tmp.path(), 1)).unwrap().len(),
        length_after_one
    );
    assert!(matches!(
        outbox.commit(&staged),
        Err(TransportError::NotStaged { .. })
    ));
    outbox.stage(1, 2, b"second attempt").unwrap();
    let staged = outbox.stage(1, 2, b"third attempt").unwrap();
    outbox.commit(&staged).unwrap();
    let spool = SegmentSpool::open(tmp.path(), SITE).unwrap();
    assert_eq!(all(&spool), vec![at(1, 1), at(1, 2)]);
    assert_eq!(spool.read(&at(1, 2)).unwrap(), b"third attempt");
}

#[test]
fn a_reopened_outbox_finds_the_staged_batch_a_crash_left() {
    let tmp = tempfile::tempdir().unwrap();
    let mut outbox = SegmentOutbox::open(tmp.path(), SITE, DEFAULT_SEGMENT_BYTES).unwrap();
    publish(&mut outbox, 1, 1);
    outbox.stage(1, 2, &sealed(2)).unwrap();
    drop(outbox);
    let mut outbox = SegmentOutbox::open(tmp.path(), SITE, DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(outbox.staged().unwrap(), vec![StagedBatch::new(1, 2)]);
    // A committed batch whose commit record was written stays committed (idempotent).
    outbox.commit(&StagedBatch::new(1, 2)).unwrap();
    drop(outbox);
    let mut outbox = SegmentOutbox::open(tmp.path(), SITE, DEFAULT_SEGMENT_BYTES).unwrap();
    assert!(outbox.staged().unwrap().is_empty());
    outbox.commit(&StagedBatch::new(1, 2)).unwrap();
}

/// Cuts a spool of three committed batches and a staged fourth at every byte, as a crash
/// mid-write could: no cut ever yields a batch that was not whole and committed, and every
/// batch whose commit record is whole survives.
#[test]
fn a_cut_at_any_byte_never_yields_a_torn_or_uncommitted_batch() {
    let source = tempfile::tempdir().unwrap();
    let mut outbox = SegmentOutbox::open(source.path(), SITE, DEFAULT_SEGMENT_BYTES).unwrap();
    let length = || fs::metadata(segment_path(source.path(), 1)).unwrap().len();
    // (sequence, where its batch record ends, where its commit record ends)
    let mut ends = Vec::new();
    for sequence in 1..=3 {
        let staged = outbox.stage(1, sequence, &sealed(sequence)).unwrap();
        let batch_end = length();
        outbox.commit(&staged).unwrap();
        ends.push((sequence, batch_end, length()));
    }
    outbox.stage(1, 4, &sealed(4)).unwrap();
    ends.push((4, length(), u64::MAX));
    let commit_ends: Vec<u64> = ends.iter().map(|&(_, _, commit_end)| commit_end).collect();
    let bytes = fs::read(segment_path(source.path(), 1)).unwrap();
    for cut in 0..=bytes.len() as u64 {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join(SITE)).unwrap();
        fs::write(segment_path(tmp.path(), 1), &bytes[..cut as usize]).unwrap();
        let whole = commit_ends.iter().filter(|&&end| end <= cut).count() as u64;
        let expected: Vec<_> = (1..=whole).map(|s| at(1, s)).collect();

        let spool = SegmentSpool::open(tmp.path(), SITE).unwrap();
        assert_eq!(all(&spool), expected, "reader at cut {cut}");
        for batch in &expected {
            assert_eq!(spool.read(batch).unwrap(), sealed(batch.sequence));
        }
        let mut writer = SegmentOutbox::open(tmp.path(), SITE, DEFAULT_SEGMENT_BYTES).unwrap();
        let staged: Vec<_> = ends
            .iter()
            .filter(|&&(_, batch_end, commit_end)| batch_end <= cut && cut < commit_end)
            .map(|&(sequence, ..)| StagedBatch::new(1, sequence))
            .collect();
        assert_eq!(writer.staged().unwrap(), staged, "writer at cut {cut}");
        // The torn end is gone, so what comes next is readable after what survived.
        publish(&mut writer, 1, whole + 1);
        assert_eq!(all(&spool).len() as u64, whole + 1, "appended at cut {cut}");
    }
}

#[test]
fn damage_in_the_middle_is_reported_not_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut outbox = SegmentOutbox::open(tmp.path(), SITE, DEFAULT_SEGMENT_BYTES).unwrap();
    for sequence in 1..=3 {
        publish(&mut outbox, 1, sequence);
    }
    drop(outbox);
    let path = segment_path(tmp.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    bytes[40] ^= 0xff; // inside the first batch's payload
    fs::write(&path, &bytes).unwrap();
    let spool = SegmentSpool::open(tmp.path(), SITE).unwrap();
    // The header is intact, so the batch is listed; reading it finds the damage.
    let listed = all(&spool);
    assert!(matches!(
        spool.read(&listed[0]),
        Err(TransportError::SpoolDamaged { offset: 0, .. })
    ));
    bytes[40] ^= 0xff;
    bytes[2] ^= 0xff; // the first header's magic
    fs::write(&path, &bytes).unwrap();
    let error = spool.committed_after(None, 10).unwrap_err();
    assert!(matches!(
        error,
        TransportError::SpoolDamaged { offset: 0, .. }
    ));
    assert!(!error.is_transient());
    assert!(error.to_string().contains("tributary seed"), "{error}");
    assert!(matches!(
        SegmentOutbox::open(tmp.path(), SITE, DEFAULT_SEGMENT_BYTES),
        Err(TransportError::SpoolDamaged { .. })
    ));
}

#[test]
fn delivered_segments_are_deleted_but_never_the_active_one() {
    let tmp = tempfile::tempdir().unwrap();
    let mut outbox = SegmentOutbox::open(tmp.path(), SITE, 300).unwrap();
    for sequence in 1..=20 {
        publish(&mut outbox, 1, sequence);
    }
    let site = tmp.path().join(SITE);
    let segments = list_segments(&site).unwrap();
    assert!(segments.len() > 3, "{segments:?}");
    let spool = SegmentSpool::open(tmp.path(), SITE).unwrap();
    let listed = all(&spool);
    assert_eq!(listed.len(), 20);
    for batch in &listed[..10] {
        spool.remove(batch).unwrap();
    }
    spool.flush().unwrap();
    let left = list_segments(&site).unwrap();
    assert!(left.len() < segments.len() && left[0] > segments[0]);
    assert_eq!(
        spool.committed_after(None, usize::MAX).unwrap(),
        listed[10..].to_vec()
    );
    // The watermark outlives the reader.
    drop(spool);
    let spool = SegmentSpool::open(tmp.path(), SITE).unwrap();
    assert_eq!(all(&spool), listed[10..].to_vec());
    for batch in &listed[10..] {
        spool.remove(batch).unwrap();
    }
    spool.flush().unwrap();
    assert!(all(&spool).is_empty());
    assert_eq!(
        list_segments(&site).unwrap(),
        vec![*segments.last().unwrap()]
    );
    // Capture goes on writing after everything was delivered.
    publish(&mut outbox, 1, 21);
    assert_eq!(all(&spool), vec![at(1, 21)]);
}

#[test]
fn a_damaged_watermark_names_its_file_and_the_remedy() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join(SITE)).unwrap();
    fs::write(tmp.path().join(SITE).join("acknowledged"), "nonsense").unwrap();
    let error = SegmentSpool::open(tmp.path(), SITE).unwrap_err();
    assert!(matches!(error, TransportError::BadWatermark { .. }));
    assert!(error.to_string().contains("delete it"), "{error}");
}

#[test]
fn an_empty_or_missing_spool_lists_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = SegmentSpool::open(tmp.path(), SITE).unwrap();
    assert!(all(&spool).is_empty());
    SegmentOutbox::open(tmp.path(), SITE, DEFAULT_SEGMENT_BYTES).unwrap();
    assert!(all(&spool).is_empty());
    spool.flush().unwrap();
}

/// Capture and the shipper at work at once, with tiny segments: every batch is delivered
/// once, in order, and the spool ends with only the active segment.
#[test]
fn a_reader_and_a_writer_at_once_deliver_everything_once_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    const BATCHES: u64 = 2_000;
    let writer = std::thread::spawn({
        let root = root.clone();
        move || {
            let mut outbox = SegmentOutbox::open(&root, SITE, 4096).unwrap();
            for sequence in 1..=BATCHES {
                let staged = outbox.stage(1, sequence, &sealed(sequence)).unwrap();
                if sequence % 7 == 0 {
                    // A batch staged and given up, then sealed again.
                    outbox.discard(&staged).unwrap();
                    outbox.stage(1, sequence, &sealed(sequence)).unwrap();
                }
                outbox.commit(&staged).unwrap();
            }
        }
    });
    let spool = SegmentSpool::open(&root, SITE).unwrap();
    let mut delivered = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while delivered.len() < BATCHES as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "stalled at {}",
            delivered.len()
        );
        for batch in spool
            .committed_after(delivered.last().copied(), 64)
            .unwrap()
        {
            assert_eq!(spool.read(&batch).unwrap(), sealed(batch.sequence));
            spool.remove(&batch).unwrap();
            delivered.push(batch);
        }
    }
    writer.join().unwrap();
    spool.flush().unwrap();
    assert_eq!(
        delivered,
        (1..=BATCHES).map(|s| at(1, s)).collect::<Vec<_>>()
    );
    assert!(all(&spool).is_empty());
    assert_eq!(list_segments(&root.join(SITE)).unwrap().len(), 1);
}

#[test]
fn the_oldest_waiting_batch_has_its_commit_time_also_after_deliveries() {
    let tmp = tempfile::tempdir().unwrap();
    let mut outbox = SegmentOutbox::open(tmp.path(), SITE, DEFAULT_SEGMENT_BYTES).unwrap();
    let spool = SegmentSpool::open(tmp.path(), SITE).unwrap();
    assert_eq!(spool.oldest_committed_at().unwrap(), None, "empty");
    let before = std::time::SystemTime::now();
    publish(&mut outbox, 1, 1);
    let between = std::time::SystemTime::now();
    publish(&mut outbox, 1, 2);
    let first = spool.oldest_committed_at().unwrap().expect("a commit time");
    // Milliseconds are kept: the commit time is the first batch's, to the millisecond.
    let millis =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    assert!(millis(before) <= millis(first) && millis(first) <= millis(between));
    assert_eq!(outbox.oldest_committed_at().unwrap(), Some(first));
    // Once the first is delivered, the second is the oldest, for the shipper at once and for
    // a reader opened after the watermark was written.
    spool.remove(&at(1, 1)).unwrap();
    spool.flush().unwrap();
    let second = spool.oldest_committed_at().unwrap().expect("a commit time");
    assert!(second >= first && millis(second) >= millis(between));
    assert_eq!(outbox.oldest_committed_at().unwrap(), Some(second));
    spool.remove(&at(1, 2)).unwrap();
    spool.flush().unwrap();
    assert_eq!(outbox.oldest_committed_at().unwrap(), None, "all delivered");
}
