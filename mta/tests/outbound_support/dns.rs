//! A fake DNS server on 127.0.0.1 (UDP) answering MX, A, AAAA and TXT queries from a table, so
//! outbound delivery and mail authentication can be tested without any outside traffic.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

/// Names the server knows, with their records. A name not in the table is NXDOMAIN; a name
/// with `None` answers SERVFAIL.
type Zone = HashMap<String, Option<Vec<RData>>>;

pub struct FakeDns {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl FakeDns {
    pub async fn start() -> FakeDns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone: Arc<Mutex<Zone>> = Arc::default();
        let table = zone.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(request) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let response = answer(&request, &table.lock().unwrap());
                if let Ok(bytes) = response.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        FakeDns { addr, zone, task }
    }

    fn add(&self, name: &str, rdata: RData) {
        self.zone
            .lock()
            .unwrap()
            .entry(key(name))
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_default()
            .push(rdata);
    }

    /// `name TXT "text"`, split into 255-byte strings.
    pub fn txt(&self, name: &str, text: &str) {
        let chunks: Vec<String> = text
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        self.add(name, RData::TXT(TXT::new(chunks)));
    }

    /// Every query for `name` fails with SERVFAIL (a temporary DNS error).
    pub fn servfail(&self, name: &str) {
        self.zone.lock().unwrap().insert(key(name), None);
    }

    /// `domain MX preference host`.
    pub fn mx(&self, domain: &str, preference: u16, host: &str) {
        let exchange = Name::from_ascii(format!("{}.", key(host))).unwrap();
        self.add(domain, RData::MX(MX::new(preference, exchange)));
    }

    /// `domain MX 0 .` (RFC 7505).
    pub fn null_mx(&self, domain: &str) {
        self.add(domain, RData::MX(MX::new(0, Name::root())));
    }

    /// `host A ip` or `host AAAA ip`.
    pub fn address(&self, host: &str, ip: &str) {
        match ip.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v4) => self.add(host, RData::A(A(v4))),
            IpAddr::V6(v6) => self.add(host, RData::AAAA(AAAA(v6))),
        }
    }
}

fn answer(request: &Message, zone: &Zone) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    for query in &request.queries {
        response.add_query(query.clone());
        match zone.get(&key(&query.name.to_ascii())) {
            None => response.metadata.response_code = ResponseCode::NXDomain,
            Some(None) => response.metadata.response_code = ResponseCode::ServFail,
            Some(Some(records)) => {
                for rdata in records {
                    let wanted = matches!(
                        (query.query_type, rdata),
                        (RecordType::MX, RData::MX(_))
                            | (RecordType::A, RData::A(_))
                            | (RecordType::AAAA, RData::AAAA(_))
                            | (RecordType::TXT, RData::TXT(_))
                    );
                    if wanted {
                        response.add_answer(Record::from_rdata(
                            query.name.clone(),
                            60,
                            rdata.clone(),
                        ));
                    }
                }
            }
        }
    }
    response
}
