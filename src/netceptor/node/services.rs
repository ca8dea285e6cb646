//! Local services: binding names, and the service advertisements that
//! tell the mesh about them (ours and everyone else's).

use std::time::{Duration, Instant, SystemTime};

use log::debug;

use super::limits::Refusal;
use super::links::AdShare;
use super::timer::Timer;
use super::{
    Advertise, ConnId, Node, Now, Output, RESERVED_PING, RESERVED_UNREACH, SOON, StoredAd,
};
use crate::gotime;
use crate::netceptor::codec::{self, ServiceAdvertisement, ServiceName, WorkCommand};
use crate::netceptor::names;

/// How often a new peer is given its next chunk of advertisements.
pub(super) const AD_SHARE_INTERVAL: Duration = Duration::from_millis(50);
/// A chunk tops what waits on the new peer's link up to this many bytes,
/// so a link that does not drain gets nothing more (at most 640 KB/s per
/// new peer at the interval above).
pub(super) const AD_SHARE_BACKLOG: usize = 32 * 1024;
/// Bytes of advertisements handed to all new peers together per interval
/// (20 MB/s), taking turns: hundreds of peers joining at once cost no
/// more memory than a few.
pub(super) const AD_SHARE_ROUND: usize = 1024 * 1024;

impl Node {
    pub(super) fn handle_service_ad(
        &mut self,
        ad: ServiceAdvertisement,
        from_peer: &str,
        now: Instant,
    ) {
        if ad.node_id == self.id {
            return;
        }
        let bad = names::check_node_id(&ad.node_id)
            .map_err(|e| format!("node ID {} {e}", names::shown(&ad.node_id)))
            .and_then(|()| {
                names::check_service(&ad.service)
                    .map_err(|e| format!("service name {} {e}", names::shown(&ad.service)))
            });
        if let Err(why) = bad {
            return self.overflow.warn(Refusal::BadAd, now, || {
                format!("Ignoring service advertisement: {why}")
            });
        }
        debug!("Received service advertisement from {}", ad.node_id);
        let Some(time) = gotime::parse_rfc3339(&ad.time) else {
            let shown = names::shown(&ad.time);
            return self.overflow.warn(Refusal::BadAd, now, || {
                format!("Error handling service advertisement: bad time {shown}")
            });
        };
        let key = (ad.node_id.clone(), ad.service.clone());
        match self.ads.get(&key) {
            Some(s) if time <= s.time => return,
            Some(_) => {}
            None if self.ads.len() >= self.limits.max_ads => {
                let max = self.limits.max_ads;
                return self.overflow.warn(Refusal::Ads, now, || {
                    format!(
                        "Ignoring service advertisement {} {}: {max} advertisements are known already (node maxadvertisements)",
                        names::shown(&key.0),
                        names::shown(&key.1)
                    )
                });
            }
            None => {}
        }
        let msg = codec::encode_service_ad(&ad);
        // A cancel stays as a tombstone with its time, so copies of it
        // arriving round a loop are recognised and not flooded again.
        let from = self.peers.get(from_peer).copied();
        self.flood(&msg, from);
        self.ads.insert(key, StoredAd { ad, time, msg });
    }

    /// Binds a service name so datagrams to it are delivered.
    pub fn bind(
        &mut self,
        service: &str,
        advertise: Option<Advertise>,
        now: Instant,
    ) -> Result<ServiceName, String> {
        let name = ServiceName::new(service).map_err(|e| e.to_string())?;
        if [RESERVED_PING, RESERVED_UNREACH].contains(&name.as_bytes())
            || self.services.contains_key(&name)
        {
            return Err(format!("service {service} is defined in reserved services"));
        }
        debug!("{} added service {service} to listener registry", self.id);
        let advertised = advertise.is_some();
        self.services.insert(name, advertise);
        if advertised {
            // Go announces a new service within 5 s; we do it at once.
            self.timers.set_no_later(Timer::Ads, now + SOON);
        }
        Ok(name)
    }

    /// Binds an unused random 8-character service name, never advertised.
    pub fn bind_ephemeral(&mut self, now: Instant) -> ServiceName {
        loop {
            let name = self.ids.alphanumeric(8);
            if let Ok(s) = self.bind(&name, None, now) {
                return s;
            }
        }
    }

    pub fn unbind(&mut self, service: ServiceName, wall: SystemTime) {
        let Some(Some(advert)) = self.services.remove(&service) else {
            return;
        };
        let ad = ServiceAdvertisement {
            node_id: self.id.clone(),
            service: service.to_text(),
            time: gotime::rfc3339_nano(wall),
            conn_type: advert.conn_type,
            tags: None,
            work_commands: None,
            cancel: true,
        };
        self.flood(&codec::encode_service_ad(&ad), None);
    }

    pub fn add_work_command(&mut self, command: WorkCommand) {
        self.work_commands.push(command);
    }

    pub(super) fn own_ads(&self, time: SystemTime) -> Vec<ServiceAdvertisement> {
        let time = gotime::rfc3339_nano(time);
        let mut ads: Vec<_> = self
            .services
            .iter()
            .filter_map(|(name, adv)| Some((name, adv.as_ref()?)))
            .map(|(name, adv)| {
                let is_control = adv.tags.get("type").is_some_and(|t| t == "Control Service");
                ServiceAdvertisement {
                    node_id: self.id.clone(),
                    service: name.to_text(),
                    time: time.clone(),
                    conn_type: adv.conn_type,
                    tags: Some(adv.tags.clone()),
                    work_commands: (is_control && !self.work_commands.is_empty())
                        .then(|| self.work_commands.clone()),
                    cancel: false,
                }
            })
            .collect();
        ads.sort_by(|a, b| a.service.cmp(&b.service));
        ads
    }

    pub(super) fn send_own_ads(&mut self, time: SystemTime) {
        for ad in self.own_ads(time) {
            debug!(
                "Sending service advertisement: {} {}",
                ad.node_id, ad.service
            );
            self.flood(&codec::encode_service_ad(&ad), None);
        }
    }

    /// A new peer learns every advertisement we know now, instead of
    /// waiting up to a minute for the periodic round as Go peers do: ours
    /// and the first chunk of the others' at once, the rest a chunk at a
    /// time as its link drains (so thousands of ads times hundreds of new
    /// peers never sit in memory at once).
    pub(super) fn share_ads_with(&mut self, conn: ConnId, at: Now) {
        for ad in self.own_ads(at.wall) {
            let msg = codec::encode_service_ad(&ad);
            self.outputs.push_back(Output::Send { conn, msg });
        }
        self.ad_shares.insert(conn, AdShare::default());
        if self.share_next_chunk(conn, AD_SHARE_BACKLOG) {
            self.timers
                .set_no_later(Timer::ShareAds, at.mono + AD_SHARE_INTERVAL);
        }
    }

    /// Tops up the link of every new peer still being handed ads.
    pub(super) fn share_ads_step(&mut self, now: Instant) {
        let mut due: Vec<(ConnId, usize)> = self
            .ad_shares
            .iter()
            .map(|(&c, s)| (c, AD_SHARE_BACKLOG.saturating_sub(s.backlog)))
            .filter(|(_, budget)| *budget > 0)
            .collect();
        if !due.is_empty() {
            // Whoever came first last round comes last this one.
            self.ad_share_turn = self.ad_share_turn.wrapping_add(1);
            let len = due.len();
            due.rotate_left(self.ad_share_turn % len);
        }
        let mut round = AD_SHARE_ROUND;
        for (conn, budget) in due {
            if round == 0 {
                break;
            }
            let before = self.ad_shares.get(&conn).map_or(0, |s| s.backlog);
            self.share_next_chunk(conn, budget.min(round));
            let after = self
                .ad_shares
                .get(&conn)
                .map_or(before + budget, |s| s.backlog);
            round = round.saturating_sub(after.saturating_sub(before).max(1));
        }
        if !self.ad_shares.is_empty() {
            self.timers.set(Timer::ShareAds, now + AD_SHARE_INTERVAL);
        }
    }

    /// Sends `conn` its next live ads, about `budget` bytes of them; true
    /// while more remain.
    fn share_next_chunk(&mut self, conn: ConnId, budget: usize) -> bool {
        use std::ops::Bound;
        let Some(share) = self.ad_shares.get_mut(&conn) else {
            return false;
        };
        if budget == 0 {
            return true;
        }
        let from = match share.after.take() {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        let mut sent = 0;
        let mut last = None;
        let mut more = false;
        for (key, stored) in self.ads.range((from, Bound::Unbounded)) {
            if sent >= budget {
                more = true;
                break;
            }
            last = Some(key);
            if !stored.ad.cancel {
                sent += stored.msg.len() + 2;
                let msg = stored.msg.clone();
                self.outputs.push_back(Output::Send { conn, msg });
            }
        }
        share.backlog += sent;
        match last {
            Some(key) if more => {
                share.after = Some(key.clone());
                true
            }
            _ => {
                self.ad_shares.remove(&conn);
                false
            }
        }
    }
}
