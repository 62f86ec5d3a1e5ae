//! Parallel gzip with output that does not depend on the number of threads, the way pigz does it:
//! the input is cut into fixed 1 MiB blocks, each block is deflated on its own (primed with the previous
//! block's last 32 KiB as dictionary, so the ratio stays close to single-stream gzip) and ended with a
//! sync flush, and the raw deflate pieces are joined into one gzip member with one CRC-32.
//!
//! Written by hand: flate2 has no parallel encoder, and calling pigz would add a process per layer and
//! make the bytes depend on the pigz version installed.

use flate2::{Compress, FlushCompress, Status};
use std::io::{self, Write};

/// Input block size. Part of the output format: changing it changes every gzip layer's digest.
pub const BLOCK: usize = 1 << 20;
const DICT: usize = 32 * 1024;

struct Job {
    seq: u64,
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
}

type Done = (u64, io::Result<Vec<u8>>);

/// A gzip writer that compresses blocks on `threads` worker threads while the caller keeps writing:
/// at most `2 × threads` blocks are in flight, so memory stays bounded, and blocks are written out in
/// order.
pub struct ParallelGz<W: Write> {
    out: W,
    level: u32,
    threads: usize,
    pending: Vec<u8>,
    tail: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    results: std::sync::mpsc::Receiver<Done>,
    workers: Vec<std::thread::JoinHandle<()>>,
    finished: std::collections::BTreeMap<u64, Vec<u8>>,
    next_seq: u64,
    next_write: u64,
}

impl<W: Write> ParallelGz<W> {
    /// Starts a gzip stream on `out` (mtime 0, no name, OS unknown: the header is always the same).
    pub fn new(mut out: W, level: u32, threads: usize) -> io::Result<Self> {
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
        let threads = threads.max(1);
        let level = level.min(9);
        let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<Job>(threads);
        let (done_tx, results) = std::sync::mpsc::channel::<Done>();
        let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let (rx, tx) = (job_rx.clone(), done_tx.clone());
                std::thread::spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let out = deflate_block(&job.data, &job.dict, level, job.last);
                    if tx.send((job.seq, out)).is_err() {
                        return;
                    }
                })
            })
            .collect();
        Ok(Self {
            out,
            level,
            threads,
            pending: Vec::with_capacity(BLOCK),
            tail: Vec::new(),
            crc: crc32fast::Hasher::new(),
            total: 0,
            jobs: Some(job_tx),
            results,
            workers,
            finished: Default::default(),
            next_seq: 0,
            next_write: 0,
        })
    }

    /// Writes out, in order, every block that is done.
    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(data) = self.finished.remove(&self.next_write) {
            self.out.write_all(&data)?;
            self.next_write += 1;
        }
        Ok(())
    }

    fn wait_one(&mut self) -> io::Result<()> {
        let (seq, data) = self.results.recv().map_err(|_| io::Error::other("compression worker stopped"))?;
        self.finished.insert(seq, data?);
        self.write_ready()
    }

    fn submit(&mut self, data: Vec<u8>, last: bool) -> io::Result<()> {
        let dict = std::mem::replace(&mut self.tail, data[data.len().saturating_sub(DICT)..].to_vec());
        let job = Job { seq: self.next_seq, data, dict, last };
        self.next_seq += 1;
        self.jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("stream already finished"))?
            .send(job)
            .map_err(|_| io::Error::other("compression worker stopped"))?;
        // Bound the blocks in flight (and so the memory).
        while self.next_seq - self.next_write > 2 * self.threads as u64 {
            self.wait_one()?;
        }
        Ok(())
    }

    /// Ends the stream (last block, CRC-32, size) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let pending = std::mem::take(&mut self.pending);
        self.submit(pending, true)?;
        self.jobs = None;
        while self.next_write < self.next_seq {
            self.wait_one()?;
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&((self.total & 0xffff_ffff) as u32).to_le_bytes())?;
        let _ = self.level;
        Ok(self.out)
    }
}

fn deflate_block(input: &[u8], dict: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(input.len() / 2 + 1024);
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    loop {
        let consumed = c.total_in() as usize;
        if out.capacity() - out.len() < 64 * 1024 {
            out.reserve(256 * 1024);
        }
        let status = c.compress_vec(&input[consumed..], &mut out, flush).map_err(io::Error::other)?;
        let done_input = c.total_in() as usize == input.len();
        match status {
            Status::StreamEnd => break,
            _ if done_input && !last && out.capacity() > out.len() => break,
            _ => {}
        }
    }
    Ok(out)
}

impl<W: Write> Write for ParallelGz<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.crc.update(buf);
        self.total += buf.len() as u64;
        let mut rest = buf;
        while !rest.is_empty() {
            let room = BLOCK - self.pending.len();
            let take = room.min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == BLOCK {
                let full = std::mem::replace(&mut self.pending, Vec::with_capacity(BLOCK));
                self.submit(full, false)?;
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn data(n: usize) -> Vec<u8> {
        // Compressible but not trivial: words from a small vocabulary.
        let words = ["conda", "layer", "python", "flask", "\n", "import", "0123", "site-packages/"];
        let mut x: u64 = 42;
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            v.extend_from_slice(words[(x >> 60) as usize % words.len()].as_bytes());
        }
        v.truncate(n);
        v
    }

    fn gz(input: &[u8], threads: usize, chunk: usize) -> Vec<u8> {
        let mut w = ParallelGz::new(Vec::new(), 6, threads).unwrap();
        for c in input.chunks(chunk.max(1)) {
            w.write_all(c).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_and_does_not_depend_on_threads() {
        for n in [0, 1, 1000, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 12345, 9 * BLOCK] {
            let input = data(n);
            let one = gz(&input, 1, 65536);
            for threads in [2, 3, 8] {
                assert_eq!(gz(&input, threads, 7777), one, "n={n} threads={threads}");
            }
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..]).read_to_end(&mut back).unwrap();
            assert_eq!(back, input, "n={n}");
            // One member, as single-stream gzip produces: MultiGzDecoder would read more members.
            let mut multi = Vec::new();
            flate2::read::MultiGzDecoder::new(&one[..]).read_to_end(&mut multi).unwrap();
            assert_eq!(multi, input);
        }
    }

    #[test]
    fn ratio_is_close_to_single_stream_gzip() {
        let input = data(4 * BLOCK);
        let par = gz(&input, 2, 65536).len();
        let mut single = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        single.write_all(&input).unwrap();
        let single = single.finish().unwrap().len();
        assert!((par as f64) < single as f64 * 1.02, "parallel {par} vs single {single}");
    }
}
