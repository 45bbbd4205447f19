//! A fake HTTP/1.1 server on loopback for the filter tests: records every request and answers
//! with what the test sets (a body, a status, garbage, or silence).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in order (repeated names repeat).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What the server answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 with this JSON body.
    Json(String),
    Status(u16),
    /// Not HTTP at all.
    Garbage,
    /// Read the request, then say nothing (the socket stays open until the server is dropped).
    Silence,
}

pub struct FakeHttp {
    pub port: u16,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeHttp {
    pub fn start(answer: Answer) -> FakeHttp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let answer = Arc::new(Mutex::new(answer));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (a, r) = (answer.clone(), requests.clone());
        std::thread::spawn(move || {
            // Silent connections are kept here so they stay open.
            let mut held = Vec::new();
            for stream in listener.incoming().map_while(Result::ok) {
                if let Some(stream) = serve(stream, &a, &r) {
                    held.push(stream);
                }
            }
        });
        FakeHttp {
            port,
            answer,
            requests,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one request, records it, answers; returns the stream when it must stay open.
fn serve(
    stream: TcpStream,
    answer: &Mutex<Answer>,
    requests: &Mutex<Vec<Recorded>>,
) -> Option<TcpStream> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
        if name == "content-length" {
            length = value.parse().ok()?;
        }
        headers.push((name, value));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    requests.lock().unwrap().push(Recorded {
        method,
        path,
        headers,
        body,
    });
    let answer = answer.lock().unwrap().clone();
    let mut stream = stream;
    let reply = match answer {
        Answer::Json(json) => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        ),
        Answer::Status(code) => {
            format!("HTTP/1.1 {code} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
        Answer::Garbage => "SPAM? EGGS!\r\n\r\n".to_string(),
        Answer::Silence => return Some(stream),
    };
    let _ = stream.write_all(reply.as_bytes());
    None
}
