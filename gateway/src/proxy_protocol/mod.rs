//! The PROXY protocol (haproxy.org's proxy-protocol.txt, versions 1 and 2): a header at the
//! start of a TCP connection that names the client a proxy accepted it from. Ferry reads it
//! from a load balancer in front of a gateway (`read`) and sends it to backends that ask for
//! it (`send`); each side is tested against the other and against the `ppp` crate.

pub mod read;
pub mod send;

/// Version 2 headers start with this signature (version 1: with `PROXY `).
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

#[cfg(test)]
mod tests;
