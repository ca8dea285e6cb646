//! Local services: binding names, and the service advertisements that
//! tell the mesh about them (ours and everyone else's).

use std::time::{Instant, SystemTime};

use log::debug;

use super::limits::Refusal;
use super::timer::Timer;
use super::{Advertise, Node, RESERVED_PING, RESERVED_UNREACH, SOON, StoredAd};
use crate::gotime;
use crate::netceptor::codec::{self, ServiceAdvertisement, ServiceName, WorkCommand};
use crate::netceptor::names;

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
        let msg = bytes::Bytes::from(codec::encode_service_ad(&ad));
        // A cancel stays as a tombstone with its time, so copies of it
        // arriving round a loop are recognised and not flooded again.
        let from = self.peers.get(from_peer).copied();
        self.flood(msg.clone(), from);
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
        self.flood(codec::encode_service_ad(&ad).into(), None);
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
            self.flood(codec::encode_service_ad(&ad).into(), None);
        }
    }
}
