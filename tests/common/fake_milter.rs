//! A milter written for the tests (std threads, loopback): answers each connection by a
//! script the test sets: a reply to one stage, and the packets of the end of message.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One reply packet: `code` and its data.
pub fn packet(code: u8, data: &[u8]) -> Vec<u8> {
    let mut p = u32::try_from(data.len() + 1)
        .expect("small")
        .to_be_bytes()
        .to_vec();
    p.push(code);
    p.extend_from_slice(data);
    p
}

#[derive(Debug, Clone, Default)]
pub struct Script {
    /// The reply to the command with this byte (`b'R'` for RCPT ...), instead of continue.
    pub at: Option<(u8, Vec<u8>)>,
    /// Packets answering the end of message (modifications, then the final reply); none:
    /// continue.
    pub eom: Vec<Vec<u8>>,
}

pub struct FakeMilter {
    pub port: u16,
    script: Arc<Mutex<Script>>,
}

impl FakeMilter {
    pub fn start() -> FakeMilter {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let script = Arc::new(Mutex::new(Script::default()));
        let shared = script.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let script = shared.lock().unwrap().clone();
                std::thread::spawn(move || converse(stream, &script));
            }
        });
        FakeMilter { port, script }
    }

    pub fn set(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }
}

fn converse(mut s: std::net::TcpStream, script: &Script) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut data = vec![0u8; u32::from_be_bytes(len) as usize];
        if data.is_empty() || s.read_exact(&mut data).is_err() {
            return;
        }
        let answer = match data[0] {
            b'O' => {
                let mut d = 6u32.to_be_bytes().to_vec();
                d.extend_from_slice(&0x1ffu32.to_be_bytes());
                d.extend_from_slice(&0u32.to_be_bytes());
                packet(b'O', &d)
            }
            b'D' | b'A' => Vec::new(),
            b'Q' => return,
            code if script.at.as_ref().is_some_and(|(c, _)| *c == code) => script
                .at
                .as_ref()
                .map(|(_, r)| r.clone())
                .unwrap_or_default(),
            b'E' if script.eom.is_empty() => packet(b'c', b""),
            b'E' => script.eom.concat(),
            _ => packet(b'c', b""),
        };
        if s.write_all(&answer).is_err() {
            return;
        }
    }
}
