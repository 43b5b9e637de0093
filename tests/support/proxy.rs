//! A TCP forwarder on a loopback port that a test can cut and restore: the link between
//! Tributary's Kafka clients and the broker, without stopping the broker (whose memory
//! storage would lose everything).
//!
//! While cut, every forwarded connection is closed and new ones are closed as soon as they
//! are accepted (and counted: how often clients tried to reconnect shows whether they back
//! off); restored, connections are forwarded again. Threads, not tasks: it keeps forwarding
//! while a test blocks its runtime on a child process. It may listen inside another network
//! namespace ([`TcpProxy::bind_in`]), so that it is the only way out of that namespace.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::Context;

use crate::NetNamespace;

/// How often the accept loop looks for connections (and for a stop).
const ACCEPT_POLL: Duration = Duration::from_millis(10);

#[derive(Default)]
struct State {
    listener: Mutex<Option<TcpListener>>,
    upstream: Mutex<Option<u16>>,
    connections: Mutex<Vec<TcpStream>>,
    cut: AtomicBool,
    /// Connections accepted (and closed) while cut.
    attempts_while_cut: AtomicU64,
    stop: AtomicBool,
}

/// A cuttable forwarder from `127.0.0.1:<port>` to `127.0.0.1:<upstream>`.
pub struct TcpProxy {
    port: u16,
    state: Arc<State>,
    accept: Option<thread::JoinHandle<()>>,
}

impl TcpProxy {
    /// Binds a free loopback port; forwarding starts with [`TcpProxy::forward_to`].
    pub fn bind() -> anyhow::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the proxy port")?;
        TcpProxy::serve(listener)
    }

    /// Listens on `127.0.0.1:<port>` inside `namespace` (see [`NetNamespace`]): the processes
    /// there reach the upstream of [`TcpProxy::forward_to`], which is connected to from the
    /// test's own namespace, through this link only.
    pub fn bind_in(namespace: &NetNamespace, port: u16) -> anyhow::Result<TcpProxy> {
        TcpProxy::serve(namespace.bind_loopback(port)?)
    }

    fn serve(listener: TcpListener) -> anyhow::Result<TcpProxy> {
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State::default());
        *state.listener.lock().unwrap() = Some(listener);
        let accept = thread::spawn({
            let state = state.clone();
            move || accept_loop(&state)
        });
        Ok(TcpProxy {
            port,
            state,
            accept: Some(accept),
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Forwards accepted connections to `127.0.0.1:<upstream>`.
    pub fn forward_to(&self, upstream: u16) {
        *self.state.upstream.lock().unwrap() = Some(upstream);
    }

    /// Cuts the link: closes every forwarded connection, and each new one at once.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        for stream in self.state.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Restores the link.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// Connections clients opened (and the proxy closed) while the link was cut.
    pub fn attempts_while_cut(&self) -> u64 {
        self.state.attempts_while_cut.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        self.cut();
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(state: &State) {
    while !state.stop.load(Ordering::Relaxed) {
        let accepted = match state.listener.lock().unwrap().as_ref() {
            Some(listener) => listener.accept(),
            None => Err(io::Error::from(io::ErrorKind::WouldBlock)),
        };
        match accepted {
            Ok((client, _)) if state.cut.load(Ordering::SeqCst) => {
                state.attempts_while_cut.fetch_add(1, Ordering::SeqCst);
                let _ = client.shutdown(Shutdown::Both);
            }
            Ok((client, _)) => {
                let upstream = *state.upstream.lock().unwrap();
                if let Some(upstream) = upstream {
                    let _ = forward(state, client, upstream);
                }
            }
            Err(_) => thread::sleep(ACCEPT_POLL),
        }
    }
}

fn forward(state: &State, client: TcpStream, upstream: u16) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect(("127.0.0.1", upstream))?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let mut connections = state.connections.lock().unwrap();
        connections.retain(|s| s.peer_addr().is_ok());
        connections.push(client.try_clone()?);
        connections.push(server.try_clone()?);
    }
    for (mut from, mut to) in [(client.try_clone()?, server.try_clone()?), (server, client)] {
        thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn forwards_cuts_and_restores() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_port = echo.local_addr().unwrap().port();
        thread::spawn(move || {
            for stream in echo.incoming() {
                let mut stream = stream.unwrap();
                thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = TcpProxy::bind().unwrap();
        proxy.forward_to(echo_port);
        let roundtrip = |port| -> io::Result<Vec<u8>> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.write_all(b"ping")?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf)?;
            Ok(buf.to_vec())
        };
        assert_eq!(roundtrip(proxy.port()).unwrap(), b"ping");
        let mut open = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        open.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        open.read_exact(&mut one).unwrap();
        proxy.cut();
        let mut rest = Vec::new();
        assert_eq!(
            open.read_to_end(&mut rest).unwrap_or(0),
            0,
            "open connections are closed"
        );
        assert!(
            roundtrip(proxy.port()).is_err(),
            "a cut link carries nothing"
        );
        assert!(proxy.attempts_while_cut() >= 1);
        proxy.restore();
        assert_eq!(roundtrip(proxy.port()).unwrap(), b"ping");
    }
}
