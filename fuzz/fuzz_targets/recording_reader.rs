//! Arbitrary bytes as a recording file, and behind a valid header: the reader yields good records and then at
//! most one error, never panics, and never allocates what a forged length announces.

#![no_main]

use libfuzzer_sys::fuzz_target;
use loopscope_wire::record::{Recorder, RecordingReader, example_hello};

fn read_all(bytes: &[u8]) {
    if let Ok(reader) = RecordingReader::new(bytes) {
        let mut errors = 0;
        for r in reader {
            if r.is_err() {
                errors += 1;
            }
        }
        assert!(errors <= 1, "the reader stops after its first error");
    }
}

fuzz_target!(|data: &[u8]| {
    read_all(data);
    let rec = Recorder::new(Vec::new(), &example_hello(), 0).unwrap();
    let header_len = rec.bytes_written() as usize;
    let mut bytes = rec.finish().unwrap()[..header_len].to_vec();
    bytes.extend_from_slice(data);
    read_all(&bytes);
});
