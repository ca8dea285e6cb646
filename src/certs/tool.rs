//! The shell around [`super::ca`]: parameters checked as Go checks them,
//! files read and written (0600), and the signing prompt.

use std::io::{BufRead, Read, Write};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use time::OffsetDateTime;

use super::ca::{self, Validity};
use super::pem::{self, PemItem};
use super::{CertError, RsaKey, SanNames};
use crate::config::{CertInitCfg, CertMakeReqCfg, CertSignReqCfg, CertToolCfg};

/// Runs one tool at time `now`. `input` answers the signing prompt, which
/// goes to `out` with the request's description.
pub fn run(
    cfg: &CertToolCfg,
    now: OffsetDateTime,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), CertError> {
    match cfg {
        CertToolCfg::Init(c) => init(c, now),
        CertToolCfg::MakeReq(c) => make_req(c),
        CertToolCfg::SignReq(c) => sign_req(c, now, input, out),
    }
}

fn init(c: &CertInitCfg, now: OffsetDateTime) -> Result<(), CertError> {
    let validity = validity(&c.not_before, &c.not_after, now, 10)?;
    let key = RsaKey::generate(c.bits)?;
    let cert = ca::create_ca(&c.common_name, &key, validity)?;
    pem::write_private(&c.out_cert, &cert)?;
    pem::write_private(&c.out_key, &key.to_pkcs1_pem()?)
}

/// Go's rules: exactly one of inkey/outkey; bits with outkey only.
fn check_key_source(c: &CertMakeReqCfg) -> Result<(), CertError> {
    let msg = match (&c.in_key, &c.out_key) {
        (None, None) => "must provide either InKey or OutKey",
        (Some(_), Some(_)) => "cannot use both InKey and OutKey",
        (Some(_), None) if c.bits != 0 => {
            "cannot specify key bits when reading an already-existing key"
        }
        (None, Some(_)) if c.bits == 0 => "must specify key bits when creating a new key",
        _ => return Ok(()),
    };
    Err(CertError::Param(msg.into()))
}

fn make_req(c: &CertMakeReqCfg) -> Result<(), CertError> {
    check_key_source(c)?;
    let names = SanNames {
        dns_names: c.dns_names.clone(),
        ip_addresses: parse_ips(&c.ip_addresses)?,
        node_ids: c.node_ids.clone(),
    };
    let key = match &c.in_key {
        Some(path) => only_rsa_key(path)?,
        None => RsaKey::generate(c.bits)?,
    };
    let req = ca::make_request(&c.common_name, &names, &key)?;
    pem::write_private(&c.out_req, &req)?;
    match &c.out_key {
        Some(path) => pem::write_private(path, &key.to_pkcs1_pem()?),
        None => Ok(()),
    }
}

fn sign_req(
    c: &CertSignReqCfg,
    now: OffsetDateTime,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), CertError> {
    let validity = validity(&c.not_before, &c.not_after, now, 1)?;
    let ca_der = pem::load_certificate(&c.ca_cert)?;
    let ca_key = pem::load_private_key(&c.ca_key)?;
    let req_der = pem::load_request(&c.req)?;
    let summary = ca::summarize_request(&req_der)?;
    if summary.names.is_empty() {
        return Err(CertError::BadInput(
            "cannot sign: no names found in certificate".into(),
        ));
    }
    if !c.verify {
        confirm(&summary.describe(), input, out)?;
    }
    let cert = ca::sign_request(&req_der, &ca_der, &ca_key, validity)?;
    pem::write_private(&c.out_cert, &cert)
}

fn parse_ips(texts: &[String]) -> Result<Vec<IpAddr>, CertError> {
    texts
        .iter()
        .map(|t| {
            t.parse()
                .map_err(|_| CertError::Param(format!("invalid IP address: {t}")))
        })
        .collect()
}

/// The one RSA key in `path`, among any other blocks.
fn only_rsa_key(path: &Path) -> Result<RsaKey, CertError> {
    let mut keys = pem::load(path)?.into_iter().filter_map(|item| match item {
        PemItem::RsaKey(k) => Some(*k),
        _ => None,
    });
    let shown = path.display();
    let key = keys
        .next()
        .ok_or_else(|| CertError::BadInput(format!("no private keys in file {shown}")))?;
    if keys.next().is_some() {
        return Err(CertError::BadInput(format!(
            "multiple private keys in file {shown}"
        )));
    }
    Ok(key)
}

/// The given dates, else now to now + `years` calendar years.
fn validity(
    not_before: &Option<String>,
    not_after: &Option<String>,
    now: OffsetDateTime,
    years: i32,
) -> Result<Validity, CertError> {
    Ok(Validity {
        not_before: match not_before {
            Some(text) => rfc3339("notbefore", text)?,
            None => now,
        },
        not_after: match not_after {
            Some(text) => rfc3339("notafter", text)?,
            None => add_years(now, years),
        },
    })
}

/// Go reads these with `time.Parse(time.RFC3339, ...)`; so does
/// [`crate::gotime::parse_rfc3339`], byte for byte.
fn rfc3339(field: &str, text: &str) -> Result<OffsetDateTime, CertError> {
    let nanos = crate::gotime::parse_rfc3339(text);
    let time = nanos.and_then(|n| OffsetDateTime::from_unix_timestamp_nanos(n).ok());
    time.ok_or_else(|| {
        CertError::Param(format!(
            "{field}: {text:?} is not an RFC3339 date/time (like 2006-01-02T15:04:05Z)"
        ))
    })
}

/// Go's `AddDate(years, 0, 0)`: 29 February in a year without one becomes
/// 1 March.
fn add_years(t: OffsetDateTime, years: i32) -> OffsetDateTime {
    let year = t.year() + years;
    t.replace_year(year).unwrap_or_else(|_| {
        t.replace_day(28)
            .and_then(|d| d.replace_year(year))
            .map(|d| d + Duration::from_secs(86_400))
            .unwrap_or(t)
    })
}

/// Longest answer read; anything longer is not a yes.
const MAX_ANSWER: u64 = 256;

/// Shows the request and asks; only `y` or `yes` (any case) signs.
fn confirm(
    description: &str,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), CertError> {
    out.write_all(description.as_bytes())
        .and_then(|()| out.write_all(b"Sign certificate (yes/no)? "))
        .and_then(|()| out.flush())
        .map_err(CertError::Prompt)?;
    let mut line = Vec::new();
    let read = (&mut *input)
        .take(MAX_ANSWER)
        .read_until(b'\n', &mut line)
        .map_err(CertError::Prompt)?;
    if read == 0 {
        return Err(CertError::NoAnswer);
    }
    let answer = String::from_utf8_lossy(&line).trim().to_ascii_lowercase();
    if answer == "y" || answer == "yes" {
        Ok(())
    } else {
        Err(CertError::Declined)
    }
}

#[cfg(test)]
mod tests;
