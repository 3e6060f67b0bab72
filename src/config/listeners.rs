//! Kafka's listeners: `listeners`, `advertised.listeners`, `listener.security.protocol.map` and
//! `inter.broker.listener.name`, checked as Kafka checks them. The old `--listen`/`--advertise`
//! make one PLAINTEXT listener.

use super::parse::{resolve_addr, split_host_port};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Kafka's security protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<SecurityProtocol> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether clients on a listener of this protocol log in with SASL first.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// Whether connections on a listener of this protocol are TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// One listener as the broker runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Upper-case, as Kafka normalises listener names.
    pub name: String,
    pub protocol: SecurityProtocol,
    pub bind: SocketAddr,
    /// What clients are told (None: not advertised, as Kafka does for a listener left out of a
    /// given `advertised.listeners`).
    pub advertised: Option<(String, u16)>,
}

/// Every listener, and which one the brokers use between themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listeners {
    pub all: Vec<Listener>,
    pub inter_broker: String,
}

impl Listeners {
    /// The inter-broker listener (always present once resolved).
    pub fn inter_broker(&self) -> &Listener {
        self.all
            .iter()
            .find(|l| l.name == self.inter_broker)
            .unwrap_or(&self.all[0])
    }

    /// `listeners` as Kafka prints it.
    pub fn listeners_text(&self) -> String {
        let parts: Vec<String> = self
            .all
            .iter()
            .map(|l| format!("{}://{}", l.name, l.bind))
            .collect();
        parts.join(",")
    }

    /// For the start-up line: each listener's address, named unless it is the plain
    /// `PLAINTEXT` one (`127.0.0.1:9092, SSL://0.0.0.0:9093`).
    pub fn serving_text(&self) -> String {
        let parts: Vec<String> = self
            .all
            .iter()
            .map(|l| {
                if l.name == "PLAINTEXT" {
                    l.bind.to_string()
                } else {
                    format!("{}://{}", l.name, l.bind)
                }
            })
            .collect();
        parts.join(", ")
    }

    /// `advertised.listeners` as Kafka prints it.
    pub fn advertised_text(&self) -> String {
        let parts: Vec<String> = self
            .all
            .iter()
            .filter_map(|l| {
                let (h, p) = l.advertised.as_ref()?;
                Some(format!("{}://{}", l.name, join_host_port(h, *p)))
            })
            .collect();
        parts.join(",")
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// What the settings gave, before checking.
#[derive(Debug, Clone, Default)]
pub struct ListenerSettings<'a> {
    pub listeners: Option<&'a str>,
    pub advertised_listeners: Option<&'a str>,
    pub protocol_map: Option<&'a str>,
    pub inter_broker_listener_name: Option<&'a str>,
    /// `--listen`, if given; `listen_default` otherwise.
    pub listen: Option<&'a str>,
    pub listen_default: &'a str,
    pub advertise: Option<&'a str>,
}

/// Most listeners a broker has (the controller refuses a registration with more).
const MAX_LISTENERS: usize = 64;

/// `NAME://HOST:PORT`, parsed (host may be empty: every interface, as in Kafka).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// A comma-separated list of `NAME://HOST:PORT`; `what` names the setting in errors.
pub fn parse_endpoints(s: &str, what: &str) -> Result<Vec<Endpoint>, String> {
    let mut out: Vec<Endpoint> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, addr) = part
            .split_once("://")
            .ok_or_else(|| format!("{what}: `{part}` is not NAME://HOST:PORT"))?;
        let name = listener_name(name, what)?;
        let (host, port) = split_host_port(addr, what)?;
        if out.iter().any(|e| e.name == name) {
            return Err(format!(
                "{what}: each listener must have a different name; `{name}` is given twice"
            ));
        }
        if out.iter().any(|e| e.port == port && port != 0) {
            return Err(format!(
                "{what}: each listener must have a different port; {port} is given twice"
            ));
        }
        if out.len() == MAX_LISTENERS {
            return Err(format!("{what}: at most {MAX_LISTENERS} listeners"));
        }
        out.push(Endpoint { name, host, port });
    }
    if out.is_empty() {
        return Err(format!("{what} is empty"));
    }
    Ok(out)
}

fn listener_name(name: &str, what: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(name.to_ascii_uppercase())
    } else {
        Err(format!(
            "{what}: listener name `{name}` must be 1 to 64 characters of A-Z, 0-9, _ and -"
        ))
    }
}

/// `NAME:PROTOCOL,…` (Kafka's `listener.security.protocol.map`).
pub fn parse_protocol_map(s: &str) -> Result<BTreeMap<String, SecurityProtocol>, String> {
    const WHAT: &str = "listener-security-protocol-map";
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, proto) = part
            .split_once(':')
            .ok_or_else(|| format!("{WHAT}: `{part}` is not NAME:PROTOCOL"))?;
        let name = listener_name(name.trim(), WHAT)?;
        let protocol = SecurityProtocol::parse(proto).ok_or_else(|| {
            format!(
                "{WHAT}: unknown security protocol `{}` for listener {name} (PLAINTEXT, SSL, \
                 SASL_PLAINTEXT or SASL_SSL)",
                proto.trim()
            )
        })?;
        if out.insert(name.clone(), protocol).is_some() {
            return Err(format!("{WHAT}: listener {name} is mapped twice"));
        }
    }
    Ok(out)
}

/// Checks the listener settings together, as Kafka does at start-up.
pub fn resolve(s: &ListenerSettings) -> Result<Listeners, String> {
    if s.listeners.is_some() && s.listen.is_some() {
        return Err("give --listeners or --listen, not both".into());
    }
    if s.advertised_listeners.is_some() && s.advertise.is_some() {
        return Err("give --advertised-listeners or --advertise, not both".into());
    }
    if s.listeners.is_some() && s.advertise.is_some() {
        return Err("--advertise goes with --listen; with --listeners use \
                    --advertised-listeners"
            .into());
    }
    let endpoints = match s.listeners {
        Some(text) => parse_endpoints(text, "listeners")?,
        None => {
            let listen = s.listen.unwrap_or(s.listen_default);
            let (host, port) = split_host_port(listen, "listen")?;
            vec![Endpoint {
                name: "PLAINTEXT".into(),
                host,
                port,
            }]
        }
    };
    let map = match s.protocol_map {
        Some(text) => parse_protocol_map(text)?,
        None => BTreeMap::new(),
    };
    let advertised = match (s.advertised_listeners, s.advertise) {
        (Some(text), _) => Some(parse_endpoints(text, "advertised-listeners")?),
        (None, Some(addr)) => {
            let (host, port) = split_host_port(addr, "advertise")?;
            Some(vec![Endpoint {
                name: "PLAINTEXT".into(),
                host,
                port,
            }])
        }
        (None, None) => None,
    };
    if let Some(adv) = &advertised {
        for a in adv {
            if !endpoints.iter().any(|e| e.name == a.name) {
                return Err(format!(
                    "advertised-listeners: listener {} is not in --listeners (advertised \
                     listener names must be equal to or a subset of the listeners)",
                    a.name
                ));
            }
            if a.host.is_empty() || a.host == "0.0.0.0" || a.host == "::" {
                return Err(format!(
                    "advertised-listeners: listener {} cannot advertise `{}`; give the address \
                     clients reach it at",
                    a.name, a.host
                ));
            }
        }
    }
    let mut all = Vec::with_capacity(endpoints.len());
    for e in &endpoints {
        let protocol = match map.get(&e.name) {
            Some(p) => *p,
            // Kafka: a listener named after a protocol uses it without a map entry.
            None => SecurityProtocol::parse(&e.name).ok_or_else(|| {
                format!(
                    "no security protocol for listener {}: name it after one (PLAINTEXT, SSL, \
                     SASL_PLAINTEXT, SASL_SSL) or map it in --listener-security-protocol-map",
                    e.name
                )
            })?,
        };
        let host = if e.host.is_empty() {
            "0.0.0.0"
        } else {
            &e.host
        };
        let bind = resolve_addr(&join_host_port(host, e.port), "listeners")?;
        let advertised = match &advertised {
            Some(adv) => adv
                .iter()
                .find(|a| a.name == e.name)
                .map(|a| (a.host.clone(), a.port)),
            None => Some((host.to_string(), e.port)),
        };
        all.push(Listener {
            name: e.name.clone(),
            protocol,
            bind,
            advertised,
        });
    }
    let inter_broker = match s.inter_broker_listener_name {
        Some(n) => listener_name(n.trim(), "inter-broker-listener-name")?,
        None => all
            .iter()
            .filter(|l| l.advertised.is_some())
            .find(|l| l.name == "PLAINTEXT")
            .or_else(|| all.iter().find(|l| l.advertised.is_some()))
            .map(|l| l.name.clone())
            .ok_or("advertised-listeners: no listener is advertised")?,
    };
    let Some(ib) = all.iter().find(|l| l.name == inter_broker) else {
        return Err(format!(
            "inter-broker-listener-name: {inter_broker} is not one of the listeners"
        ));
    };
    if ib.advertised.is_none() {
        return Err(format!(
            "inter-broker-listener-name: {inter_broker} must be in --advertised-listeners"
        ));
    }
    Ok(Listeners { all, inter_broker })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners(l: &str) -> ListenerSettings<'_> {
        ListenerSettings {
            listeners: Some(l),
            listen_default: "127.0.0.1:9092",
            ..Default::default()
        }
    }

    fn names(ls: &Listeners) -> Vec<(&str, SecurityProtocol, String)> {
        ls.all
            .iter()
            .map(|l| (l.name.as_str(), l.protocol, l.bind.to_string()))
            .collect()
    }

    #[test]
    fn no_listener_settings_give_one_plaintext_listener_on_the_default_address() {
        let ls = resolve(&ListenerSettings {
            listen_default: "127.0.0.1:9092",
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            names(&ls),
            vec![(
                "PLAINTEXT",
                SecurityProtocol::Plaintext,
                "127.0.0.1:9092".into()
            )]
        );
        assert_eq!(ls.all[0].advertised, Some(("127.0.0.1".into(), 9092)));
        assert_eq!(ls.inter_broker, "PLAINTEXT");
    }

    #[test]
    fn listen_and_advertise_make_a_single_plaintext_listener() {
        let ls = resolve(&ListenerSettings {
            listen: Some("0.0.0.0:19092"),
            advertise: Some("broker1.example:9092"),
            listen_default: "127.0.0.1:9092",
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ls.all.len(), 1);
        assert_eq!(ls.all[0].bind.to_string(), "0.0.0.0:19092");
        assert_eq!(ls.all[0].advertised, Some(("broker1.example".into(), 9092)));
    }

    #[test]
    fn listeners_named_after_a_protocol_use_it_without_a_map_entry() {
        let ls = resolve(&listeners(
            "plaintext://127.0.0.1:9092,SSL://127.0.0.1:9093",
        ))
        .unwrap();
        assert_eq!(
            names(&ls),
            vec![
                (
                    "PLAINTEXT",
                    SecurityProtocol::Plaintext,
                    "127.0.0.1:9092".into()
                ),
                ("SSL", SecurityProtocol::Ssl, "127.0.0.1:9093".into()),
            ]
        );
        assert_eq!(ls.inter_broker, "PLAINTEXT");
        assert_eq!(
            ls.listeners_text(),
            "PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9093"
        );
    }

    #[test]
    fn a_custom_listener_name_takes_its_protocol_from_the_map() {
        let mut s = listeners("INTERNAL://127.0.0.1:9092,CLIENT://127.0.0.1:9093");
        s.protocol_map = Some("INTERNAL:PLAINTEXT,client:ssl");
        s.inter_broker_listener_name = Some("internal");
        let ls = resolve(&s).unwrap();
        assert_eq!(ls.all[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(ls.all[1].protocol, SecurityProtocol::Ssl);
        assert_eq!(ls.inter_broker, "INTERNAL");
        s.protocol_map = Some("INTERNAL:PLAINTEXT");
        let e = resolve(&s).unwrap_err();
        assert!(
            e.contains("no security protocol for listener CLIENT"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_protocol_in_the_map_is_refused_by_name() {
        let mut s = listeners("A://127.0.0.1:9092");
        s.protocol_map = Some("A:TLS");
        let e = resolve(&s).unwrap_err();
        assert!(e.contains("unknown security protocol `TLS`"), "{e}");
        s.protocol_map = Some("A");
        assert!(resolve(&s).unwrap_err().contains("NAME:PROTOCOL"));
    }

    #[test]
    fn duplicate_listener_names_or_ports_are_refused() {
        let e = resolve(&listeners(
            "PLAINTEXT://127.0.0.1:9092,plaintext://127.0.0.1:9093",
        ))
        .unwrap_err();
        assert!(e.contains("different name"), "{e}");
        let e = resolve(&listeners(
            "PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.2:9092",
        ))
        .unwrap_err();
        assert!(e.contains("different port"), "{e}");
    }

    #[test]
    fn malformed_listeners_are_refused() {
        for bad in [
            "127.0.0.1:9092",
            "PLAINTEXT://127.0.0.1",
            "://h:1",
            "A B://h:1",
            "",
        ] {
            assert!(resolve(&listeners(bad)).is_err(), "{bad:?}");
        }
        assert!(resolve(&listeners("PLAINTEXT://127.0.0.1:99999")).is_err());
    }

    #[test]
    fn advertised_listeners_must_name_listeners_and_routable_hosts() {
        let mut s = listeners("PLAINTEXT://0.0.0.0:9092,SSL://0.0.0.0:9093");
        s.advertised_listeners = Some("PLAINTEXT://b1:9092,SSL://b1:19093");
        let ls = resolve(&s).unwrap();
        assert_eq!(ls.all[1].advertised, Some(("b1".into(), 19093)));
        assert_eq!(ls.advertised_text(), "PLAINTEXT://b1:9092,SSL://b1:19093");
        s.advertised_listeners = Some("PLAINTEXT://b1:9092,OTHER://b1:9094");
        assert!(resolve(&s).unwrap_err().contains("OTHER"));
        s.advertised_listeners = Some("PLAINTEXT://0.0.0.0:9092");
        assert!(resolve(&s).unwrap_err().contains("0.0.0.0"));
        // A listener left out of advertised-listeners is bound but not advertised.
        s.advertised_listeners = Some("PLAINTEXT://b1:9092");
        assert_eq!(resolve(&s).unwrap().all[1].advertised, None);
    }

    #[test]
    fn an_empty_host_binds_every_interface() {
        let ls = resolve(&listeners("PLAINTEXT://:9092")).unwrap();
        assert_eq!(ls.all[0].bind.to_string(), "0.0.0.0:9092");
    }

    #[test]
    fn ipv6_listeners_keep_their_brackets_when_printed() {
        let ls = resolve(&listeners("PLAINTEXT://[::1]:9092")).unwrap();
        assert_eq!(ls.all[0].bind.to_string(), "[::1]:9092");
        assert_eq!(ls.advertised_text(), "PLAINTEXT://[::1]:9092");
    }

    #[test]
    fn the_inter_broker_listener_must_be_an_advertised_listener() {
        let mut s = listeners("PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9093");
        s.inter_broker_listener_name = Some("SSL");
        assert_eq!(
            resolve(&s).unwrap().inter_broker().protocol,
            SecurityProtocol::Ssl
        );
        s.inter_broker_listener_name = Some("NOPE");
        assert!(resolve(&s).unwrap_err().contains("NOPE"));
        s.inter_broker_listener_name = Some("SSL");
        s.advertised_listeners = Some("PLAINTEXT://h:9092");
        assert!(resolve(&s)
            .unwrap_err()
            .contains("must be in --advertised-listeners"));
        // Without a PLAINTEXT listener the first one is the inter-broker listener.
        assert_eq!(
            resolve(&listeners("SSL://127.0.0.1:9093"))
                .unwrap()
                .inter_broker,
            "SSL"
        );
    }

    #[test]
    fn old_and_new_listener_flags_do_not_mix() {
        let mut s = listeners("PLAINTEXT://127.0.0.1:9092");
        s.listen = Some("127.0.0.1:9092");
        assert!(resolve(&s).unwrap_err().contains("not both"));
        let mut s = listeners("PLAINTEXT://127.0.0.1:9092");
        s.advertise = Some("h:1");
        assert!(resolve(&s).is_err());
    }

    #[test]
    fn sasl_listeners_take_their_protocol_from_their_name_or_the_map() {
        let mut s = listeners("SASL_SSL://127.0.0.1:9093,INTERNAL://127.0.0.1:9094");
        s.protocol_map = Some("INTERNAL:SASL_PLAINTEXT");
        let l = resolve(&s).expect("SASL listeners resolve");
        assert_eq!(l.all[0].protocol, SecurityProtocol::SaslSsl);
        assert!(l.all[0].protocol.uses_sasl() && l.all[0].protocol.uses_tls());
        assert_eq!(l.all[1].protocol, SecurityProtocol::SaslPlaintext);
        assert!(!l.all[1].protocol.uses_tls());
    }
}
