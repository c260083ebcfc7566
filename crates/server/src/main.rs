//! `bitbridge-server`: hosts native libraries for one bitbridge client.
//!
//! Started by the client with the connection (one end of a socketpair) as its stdin; nothing else can
//! reach it. Speaks first with a [`Hello`](bitbridge_proto::Hello), then answers requests until the
//! client shuts it down or disappears (EOF on the socket, or the parent-death signal).

fn main() -> std::process::ExitCode {
    bitbridge_server::run(None)
}
