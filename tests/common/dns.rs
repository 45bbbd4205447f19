//! A fake DNS server on loopback (UDP) answering from a table, so tests that need MX, A or
//! TXT records never query the outside world. Names not in the table are NXDOMAIN.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, MX, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record};

type Zone = HashMap<String, Vec<RData>>;

pub struct FakeDns {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    stop: Arc<AtomicBool>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl FakeDns {
    pub fn start() -> FakeDns {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind fake DNS");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let zone: Arc<Mutex<Zone>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (table, stopped) = (zone.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(request) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
                reply.metadata.recursion_desired = request.metadata.recursion_desired;
                reply.metadata.recursion_available = true;
                reply.add_queries(request.queries.clone());
                if let Some(q) = request.queries.first() {
                    let zone = table.lock().map(|z| z.clone()).unwrap_or_default();
                    match zone.get(&key(&q.name().to_ascii())) {
                        None => reply.metadata.response_code = ResponseCode::NXDomain,
                        Some(records) => {
                            for rdata in
                                records.iter().filter(|r| r.record_type() == q.query_type())
                            {
                                reply.add_answer(Record::from_rdata(
                                    q.name().clone(),
                                    60,
                                    rdata.clone(),
                                ));
                            }
                        }
                    }
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, peer);
                }
            }
        });
        FakeDns { addr, zone, stop }
    }

    fn add(&self, name: &str, rdata: RData) {
        self.zone
            .lock()
            .expect("zone")
            .entry(key(name))
            .or_default()
            .push(rdata);
    }

    pub fn mx(&self, domain: &str, preference: u16, host: &str) {
        let exchange = Name::from_ascii(format!("{}.", key(host))).expect("name");
        self.add(domain, RData::MX(MX::new(preference, exchange)));
    }

    pub fn a(&self, host: &str, ip: std::net::Ipv4Addr) {
        self.add(host, RData::A(A(ip)));
    }

    pub fn txt(&self, name: &str, text: &str) {
        self.add(name, RData::TXT(TXT::new(vec![text.to_string()])));
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
