//! The CRC framing of the spool's and the book tape's segment files: each record is its
//! length (u32 LE), the CRC-32 of its payload (u32 LE), then the payload. A record that does
//! not fit, is cut short or fails its CRC is `InvalidData`: corruption or a torn tail,
//! told apart from an I/O error, which says nothing about the data.

use std::io::{self, Read};

/// Bytes before a record's payload.
pub(crate) const HEADER: u64 = 8;
/// Largest record a reader accepts.
const MAX_RECORD: u32 = 256 << 20;

/// Fills in the header of `framed`, which holds [`HEADER`] bytes of room, then the payload.
pub(crate) fn seal(framed: &mut [u8]) {
    let body_len = framed.len() as u64 - HEADER;
    let crc = crc32fast::hash(&framed[HEADER as usize..]);
    framed[..4].copy_from_slice(&(body_len as u32).to_le_bytes());
    framed[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// One framed record from `r`, which has `left` bytes before its segment ends: (framed
/// length, payload). A record that does not fit, is cut short, or whose CRC does not match
/// is `InvalidData` (corruption, or a torn tail); any other read error is returned as it is
/// (an I/O error says nothing about the data).
pub(crate) fn read_record(r: &mut impl Read, left: u64) -> io::Result<(u64, Vec<u8>)> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_owned());
    let cut_short = |m: &'static str| {
        move |e: io::Error| match e.kind() {
            io::ErrorKind::UnexpectedEof => bad(m),
            _ => e,
        }
    };
    if left < HEADER {
        return Err(bad("a header cut short"));
    }
    let mut header = [0u8; HEADER as usize];
    r.read_exact(&mut header)
        .map_err(cut_short("a header cut short"))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD || u64::from(len) > left - HEADER {
        return Err(bad("a record longer than what is left of its segment"));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)
        .map_err(cut_short("a record cut short"))?;
    if crc32fast::hash(&payload) != crc {
        return Err(bad("a record whose CRC does not match"));
    }
    Ok((HEADER + u64::from(len), payload))
}
