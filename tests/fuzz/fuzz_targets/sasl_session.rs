//! A SASL client's frames through one connection's authenticator (`sasl::session`), as a
//! SASL listener feeds them before anything else: SaslHandshake / SaslAuthenticate decoding,
//! bare v0 tokens, and the PLAIN and SCRAM exchanges against one stored user.
//!
//! The input is split into up to 8 frames at 0xFF bytes; each goes to `on_frame`
//! until the authenticator closes the connection. Asserts: nothing panics or allocates past
//! libFuzzer's limit; a closed connection is never also logged in as anyone but the user.

#![no_main]

use chronik::sasl::scram::{Credential, Mechanism};
use chronik::sasl::session::{decoy_key, Authenticator, Verdict};
use chronik::sasl::SaslMechanism;
use chronik_raft::scram::{ScramCredential, ScramMechanism};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

fn credential(m: ScramMechanism) -> ScramCredential {
    static CREDS: OnceLock<[ScramCredential; 2]> = OnceLock::new();
    let all = CREDS.get_or_init(|| {
        let c = |m| Credential::from_password(m, b"pw", b"salt", 4096).expect("cred").into();
        [c(Mechanism::Sha256), c(Mechanism::Sha512)]
    });
    all[(m == ScramMechanism::Sha512) as usize].clone()
}

fuzz_target!(|data: &[u8]| {
    let enabled: Arc<[SaslMechanism]> = Arc::from(vec![
        SaslMechanism::Plain,
        SaslMechanism::Scram(ScramMechanism::Sha256),
        SaslMechanism::Scram(ScramMechanism::Sha512),
    ]);
    let mut a = Authenticator::new(enabled, 1000, decoy_key());
    let lookup = |user: &str, m| (user == "u").then(|| credential(m));
    let now = Instant::now();
    for frame in data.split(|b| *b == 0xff).take(8) {
        let mut verdict = a.on_frame(frame, now, &lookup);
        if let Verdict::CheckPlain(check) = verdict {
            let ok = check.verify_here();
            verdict = a.finish_plain(check, ok, now);
        }
        match verdict {
            Verdict::Close(..) => return,
            Verdict::Serve | Verdict::Answer(_) => {}
            Verdict::CheckPlain(_) => panic!("finish_plain gave another check"),
        }
        if let Some(p) = a.principal() {
            assert_eq!(&*p, "User:u");
        }
    }
});
