//! A gzip writer that compresses on every core and still gives one
//! ordinary gzip member, byte-identical for the same input.
//!
//! The input is cut into fixed-size blocks (so the cut never depends on how
//! the caller writes). Each block is raw-deflated on a worker with the
//! previous block's last 32 KiB as its dictionary, ending in a sync flush
//! (the last one finishes the stream); the results are written in order
//! and their CRCs combined, as pigz does.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

const BLOCK: usize = 256 * 1024;
const WINDOW: usize = 32 * 1024;

struct Job {
    seq: u64,
    data: Vec<u8>,
    dict: Option<Vec<u8>>,
    last: bool,
}

struct Done {
    seq: u64,
    out: io::Result<(Vec<u8>, crc32fast::Hasher)>,
}

pub struct ParallelGzWriter<W: Write> {
    out: Option<W>,
    level: u32,
    block: Vec<u8>,
    next_seq: u64,
    next_write: u64,
    in_flight: usize,
    max_in_flight: usize,
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    ready: BTreeMap<u64, (Vec<u8>, crc32fast::Hasher)>,
    workers: Vec<JoinHandle<()>>,
    crc: crc32fast::Hasher,
    size: u64,
    prev_tail: Option<Vec<u8>>,
}

fn deflate_block(job: &Job, level: u32) -> io::Result<(Vec<u8>, crc32fast::Hasher)> {
    let mut c = Compress::new(Compression::new(level), false);
    if let Some(dict) = &job.dict {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(job.data.len() / 2 + 1024);
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(4096));
        }
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&job.data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == job.data.len();
        let done = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            _ => all_in && out.len() < out.capacity(),
        };
        if done {
            break;
        }
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&job.data);
    Ok((out, crc))
}

impl<W: Write> ParallelGzWriter<W> {
    pub fn new(mut out: W, level: u32) -> io::Result<Self> {
        // No name, no timestamp, OS "Unix": the same bytes on every run.
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3])?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let mut workers = Vec::new();
        for i in 0..threads {
            let rx = Arc::clone(&jobs_rx);
            let tx = done_tx.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("gzip {i}"))
                    .spawn(move || {
                        loop {
                            let job = match rx.lock().unwrap().recv() {
                                Ok(j) => j,
                                Err(_) => return,
                            };
                            let out = deflate_block(&job, level);
                            if tx.send(Done { seq: job.seq, out }).is_err() {
                                return;
                            }
                        }
                    })?,
            );
        }
        Ok(ParallelGzWriter {
            out: Some(out),
            level,
            block: Vec::with_capacity(BLOCK),
            next_seq: 0,
            next_write: 0,
            in_flight: 0,
            max_in_flight: threads * 3,
            jobs: Some(jobs_tx),
            done: done_rx,
            ready: BTreeMap::new(),
            workers,
            crc: crc32fast::Hasher::new(),
            size: 0,
            prev_tail: None,
        })
    }

    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let tail = data[data.len().saturating_sub(WINDOW)..].to_vec();
        let dict = self.prev_tail.replace(tail);
        let job = Job {
            seq: self.next_seq,
            data,
            dict,
            last,
        };
        self.next_seq += 1;
        self.jobs
            .as_ref()
            .expect("not finished")
            .send(job)
            .map_err(|_| io::Error::other("gzip workers stopped"))?;
        self.in_flight += 1;
        while self.in_flight >= self.max_in_flight {
            self.collect_one()?;
        }
        Ok(())
    }

    fn collect_one(&mut self) -> io::Result<()> {
        let done = self
            .done
            .recv()
            .map_err(|_| io::Error::other("gzip workers stopped"))?;
        self.in_flight -= 1;
        self.ready.insert(done.seq, done.out?);
        while let Some((out, crc)) = self.ready.remove(&self.next_write) {
            self.out.as_mut().expect("not finished").write_all(&out)?;
            self.crc.combine(&crc);
            self.next_write += 1;
        }
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        while self.in_flight > 0 {
            self.collect_one()?;
        }
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let mut out = self.out.take().expect("finished once");
        out.write_all(&self.crc.clone().finalize().to_le_bytes())?;
        out.write_all(&(self.size as u32).to_le_bytes())?;
        out.flush()?;
        let _ = self.level;
        Ok(out)
    }
}

impl<W: Write> Write for ParallelGzWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.block.len();
        let n = room.min(buf.len());
        self.block.extend_from_slice(&buf[..n]);
        self.size += n as u64;
        if self.block.len() == BLOCK {
            self.dispatch(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGzWriter<W> {
    fn drop(&mut self) {
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn compress(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut w = ParallelGzWriter::new(Vec::new(), 6).unwrap();
        for c in data.chunks(chunk.max(1)) {
            w.write_all(c).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_through_a_plain_gzip_decoder_and_is_deterministic() {
        let mut data = Vec::new();
        for i in 0..(3 * BLOCK + 12345) {
            data.push(((i * 7919) % 251) as u8 ^ (i / 1000) as u8);
        }
        let a = compress(&data, 4096);
        let b = compress(&data, 777);
        assert_eq!(
            a, b,
            "output must not depend on write sizes or thread timing"
        );
        // A single-member decoder reads it all: it is one gzip member.
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        assert!(a.len() < data.len() / 2);
    }

    #[test]
    fn empty_input() {
        let a = compress(&[], 1);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());
    }
}
