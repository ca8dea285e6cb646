//! Local services: binding names, and the service advertisements that
//! tell the mesh about them (ours and everyone else's).

use std::time::{Instant, SystemTime};

use log::{debug, error};

use super::timer::Timer;
use super::{Advertise, ConnId, Node, Output, RESERVED_PING, RESERVED_UNREACH, SOON, StoredAd};
use crate::gotime;
use crate::netceptor::codec::{self, ServiceAdvertisement, ServiceName, WorkCommand};

impl Node {
    pub(super) fn handle_service_ad(&mut self, ad: ServiceAdvertisement, from_peer: &str) {
        if ad.node_id == self.id {
            return;
        }
        debug!("Received service advertisement from {}", ad.node_id);
        let Some(time) = gotime::parse_rfc3339(&ad.time) else {
            error!(
                "Error handling service advertisement: bad time {:?}",
                ad.time
            );
            return;
        };
        let key = (ad.node_id.clone(), ad.service.clone());
        if self.ads.get(&key).is_some_and(|s| time <= s.time) {
            return;
        }
        let msg = codec::encode_service_ad(&ad);
        // A cancel stays as a tombstone with its time, so copies of it
        // arriving round a loop are recognised and not flooded again.
        self.ads.insert(key, StoredAd { ad, time });
        let from = self.peers.get(from_peer).copied();
        self.flood(&msg, from);
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

    /// A new peer learns every advertisement we know at once, instead of
    /// waiting up to a minute for the periodic round as Go peers do.
    pub(super) fn share_ads_with(&mut self, conn: ConnId, time: SystemTime) {
        let mut msgs: Vec<Vec<u8>> = self
            .own_ads(time)
            .iter()
            .map(codec::encode_service_ad)
            .collect();
        let live = self.ads.values().filter(|s| !s.ad.cancel);
        msgs.extend(live.map(|s| codec::encode_service_ad(&s.ad)));
        for msg in msgs {
            self.outputs.push_back(Output::Send { conn, msg });
        }
    }
}
