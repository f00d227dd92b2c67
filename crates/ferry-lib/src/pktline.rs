//! git's pkt-line framing, as used by the long-running filter protocol
//! (`gitprotocol-common(5)`, `gitattributes(5)` "Long Running Filter Process").

use std::io::{self, Read, Write};

/// Largest payload of one packet.
pub const MAX_DATA: usize = 65516;

#[derive(Debug, PartialEq, Eq)]
pub enum Packet {
    Flush,
    Data(Vec<u8>),
}

pub fn read_packet(r: &mut impl Read) -> io::Result<Option<Packet>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let s = std::str::from_utf8(&len).map_err(|_| bad("pkt-line length is not hex"))?;
    let n = usize::from_str_radix(s, 16).map_err(|_| bad("pkt-line length is not hex"))?;
    if n == 0 {
        return Ok(Some(Packet::Flush));
    }
    if n < 4 || n - 4 > MAX_DATA {
        return Err(bad("pkt-line length out of range"));
    }
    let mut data = vec![0u8; n - 4];
    r.read_exact(&mut data)?;
    Ok(Some(Packet::Data(data)))
}

/// Reads a text packet and strips its trailing LF; `None` on flush.
pub fn read_text(r: &mut impl Read) -> io::Result<Option<String>> {
    match read_packet(r)? {
        None => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "git closed the filter pipe",
        )),
        Some(Packet::Flush) => Ok(None),
        Some(Packet::Data(d)) => {
            let d = d.strip_suffix(b"\n").unwrap_or(&d);
            Ok(Some(String::from_utf8_lossy(d).into_owned()))
        }
    }
}

/// Reads `key=value` lines up to a flush.
pub fn read_kv_list(r: &mut impl Read) -> io::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    while let Some(line) = read_text(r)? {
        let (k, v) = line.split_once('=').unwrap_or((line.as_str(), ""));
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

pub fn write_data(w: &mut impl Write, data: &[u8]) -> io::Result<()> {
    for chunk in data.chunks(MAX_DATA) {
        write!(w, "{:04x}", chunk.len() + 4)?;
        w.write_all(chunk)?;
    }
    Ok(())
}

pub fn write_text(w: &mut impl Write, line: &str) -> io::Result<()> {
    let mut d = line.as_bytes().to_vec();
    d.push(b'\n');
    write_data(w, &d)
}

pub fn write_flush(w: &mut impl Write) -> io::Result<()> {
    w.write_all(b"0000")
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_text(&mut buf, "git-filter-server").unwrap();
        write_flush(&mut buf).unwrap();
        write_data(&mut buf, &vec![7u8; MAX_DATA + 10]).unwrap();
        assert!(buf.starts_with(b"0016git-filter-server\n0000"));
        let mut r = &buf[..];
        assert_eq!(
            read_text(&mut r).unwrap().as_deref(),
            Some("git-filter-server")
        );
        assert_eq!(read_text(&mut r).unwrap(), None);
        assert_eq!(
            read_packet(&mut r).unwrap(),
            Some(Packet::Data(vec![7u8; MAX_DATA]))
        );
        assert_eq!(
            read_packet(&mut r).unwrap(),
            Some(Packet::Data(vec![7u8; 10]))
        );
        assert_eq!(read_packet(&mut r).unwrap(), None);
        assert!(read_packet(&mut &b"zzzz"[..]).is_err());
    }
}
