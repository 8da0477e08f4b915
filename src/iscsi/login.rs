//! The login phase of one connection (RFC 7143 §6.3, §11.12, §11.13), from
//! the first Login Request to full feature phase or a refusal.
//!
//! A [`Login`] is consumed by every PDU it is fed: [`Login::handle`] returns
//! a [`Step`] that either hands the login back with a response to send
//! ([`Step::Continue`]), ends it in full feature phase with the negotiated
//! [`Established`] parameters ([`Step::FullFeature`]), or refuses it
//! ([`Step::Refused`]: send the response, then close). So a session can
//! never be built from a half-finished login.
//!
//! Call order for the engine: create with [`Login::new`] when a connection is
//! accepted; frame PDUs with no digests and [`LOGIN_MAX_DATA`]; feed each
//! Login Request to `handle`; close if [`Login::deadline`] passes first.
//!
//! What it enforces:
//! - version 0 only (0x0205 otherwise); new sessions only: a non-zero TSIH
//!   (adding a connection or reinstating) is 0x020a;
//! - InitiatorName in the first PDU, TargetName for a Normal session
//!   (0x0207 missing parameter); unknown targets 0x0203; initiators outside a
//!   target's list 0x0202; failed or refused authentication 0x0201;
//! - a key sent twice in one login is an initiator error, 0x0200 (§6.1,
//!   BC-28b), as are CHAP or AuthMethod keys outside the security stage and
//!   malformed text;
//! - stage rules: CSG as agreed, NSG after it, T and C not both set;
//! - C-bit continuations are joined (bounded) and each answered with an
//!   empty response (§6.2);
//! - the target declares its MaxRecvDataSegmentLength in its first
//!   operational-stage response, and TargetPortalGroupTag=1 in the first
//!   response of a Normal session (§13.9).
//!
//! Not done yet: responses longer than one PDU (our replies are a few hundred
//! bytes); session reinstatement and multiple connections per session.

use std::collections::HashSet;
use std::time::Instant;

use super::chap::{self, Chap, Credentials};
use super::frame::{self, Digests, Pdu};
use super::negotiate::{Limits, Params};
use super::pdu::{Header, LoginRequest, LoginResponse};
use super::text::{self, TextBuffer};

/// Longest Login data segment accepted: MaxRecvDataSegmentLength is not in
/// force during login, so both sides keep to its default (RFC 7143 §13.12).
pub const LOGIN_MAX_DATA: u32 = super::negotiate::DEFAULT_DATA_SEGMENT;

/// Login stages (CSG/NSG values, RFC 7143 §11.12.3).
pub const SECURITY: u8 = 0;
pub const OPERATIONAL: u8 = 1;
pub const FULL_FEATURE: u8 = 3;

/// The portal group every portal of this target belongs to.
pub const PORTAL_GROUP_TAG: u16 = 1;

/// A target as the login sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetEntry {
    pub iqn: String,
    /// Initiators must authenticate with these.
    pub chap: Option<Credentials>,
    /// The target answers mutual challenges with these.
    pub mutual_chap: Option<Credentials>,
    /// Initiator names allowed; empty allows every initiator.
    pub initiators: Vec<String>,
}

impl TargetEntry {
    /// Whether `initiator` may log in to (or discover) this target.
    /// iSCSI names compare case-insensitively (RFC 3722 normalisation).
    pub fn admits(&self, initiator: &str) -> bool {
        self.initiators.is_empty()
            || self
                .initiators
                .iter()
                .any(|i| i.eq_ignore_ascii_case(initiator))
    }
}

/// Index of the target a name refers to.
pub fn find_target(targets: &[TargetEntry], name: &str) -> Option<usize> {
    targets
        .iter()
        .position(|t| t.iqn.eq_ignore_ascii_case(name))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionType {
    Discovery,
    Normal,
}

/// Login status class and detail (RFC 7143 §11.13.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStatus {
    Success,
    InitiatorError,
    AuthenticationFailure,
    AuthorizationFailure,
    NotFound,
    UnsupportedVersion,
    MissingParameter,
    SessionTypeNotSupported,
    SessionDoesNotExist,
    InvalidDuringLogin,
    OutOfResources,
}

impl LoginStatus {
    /// (Status-Class, Status-Detail).
    pub fn code(self) -> (u8, u8) {
        match self {
            LoginStatus::Success => (0, 0),
            LoginStatus::InitiatorError => (2, 0x00),
            LoginStatus::AuthenticationFailure => (2, 0x01),
            LoginStatus::AuthorizationFailure => (2, 0x02),
            LoginStatus::NotFound => (2, 0x03),
            LoginStatus::UnsupportedVersion => (2, 0x05),
            LoginStatus::MissingParameter => (2, 0x07),
            LoginStatus::SessionTypeNotSupported => (2, 0x09),
            LoginStatus::SessionDoesNotExist => (2, 0x0a),
            LoginStatus::InvalidDuringLogin => (2, 0x0b),
            LoginStatus::OutOfResources => (3, 0x02),
        }
    }
}

/// A Login Response to send: header and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub header: LoginResponse,
    pub data: Vec<u8>,
}

impl Response {
    /// The whole PDU; login PDUs never carry digests.
    pub fn encode(&self) -> Vec<u8> {
        let bhs = Header::LoginResponse(self.header).encode(0, self.data.len() as u32);
        let mut out = Vec::with_capacity(48 + self.data.len() + 3);
        frame::encode_pdu(&mut out, bhs, &self.data, Digests::default());
        out
    }
}

/// What a finished login hands to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Established {
    pub params: Params,
    pub session_type: SessionType,
    /// Index into the target list; None for discovery.
    pub target: Option<usize>,
    pub initiator_name: String,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub cid: u16,
    /// The CmdSN the first command will carry.
    pub exp_cmd_sn: u32,
    /// The StatSN of the first response after login.
    pub stat_sn: u32,
}

/// The result of feeding one PDU to a [`Login`].
#[derive(Debug)]
pub enum Step {
    /// Send the response; the login goes on.
    Continue(Box<Login>, Response),
    /// Send the response; the connection is in full feature phase.
    FullFeature(Box<Established>, Response),
    /// Send the response, then close the connection.
    Refused(Response, LoginStatus),
}

#[derive(Debug)]
enum Auth {
    /// No AuthMethod agreed yet.
    Unset,
    None,
    Chap(Chap),
}

/// Fields fixed by the first Login Request.
#[derive(Debug, Clone, Copy)]
struct First {
    isid: [u8; 6],
    cid: u16,
}

/// One connection's login in progress.
#[derive(Debug)]
pub struct Login {
    limits: Limits,
    tsih: u16,
    random: [u8; chap::CHALLENGE_LEN + 1],
    deadline: Instant,
    first: Option<First>,
    stage: u8,
    itt: u32,
    exp_cmd_sn: u32,
    stat_sn: u32,
    initiator_name: Option<String>,
    target_name: Option<String>,
    session_type: SessionType,
    target: Option<usize>,
    resolved: bool,
    auth: Auth,
    params: Params,
    /// Every key the initiator sent so far, to refuse re-declarations.
    seen: HashSet<String>,
    text: TextBuffer,
    responses: u32,
    declared_mrdsl: bool,
}

type Replies = Vec<(String, String)>;

impl Login {
    /// A login on a new connection. `tsih` is the handle the session will
    /// get (non-zero, unique among live sessions); `random` seeds the CHAP
    /// identifier and challenge; the login must finish by `deadline`.
    pub fn new(
        limits: Limits,
        tsih: u16,
        random: [u8; chap::CHALLENGE_LEN + 1],
        deadline: Instant,
    ) -> Login {
        Login {
            limits,
            tsih,
            random,
            deadline,
            first: None,
            stage: SECURITY,
            itt: 0,
            exp_cmd_sn: 0,
            stat_sn: 0,
            initiator_name: None,
            target_name: None,
            session_type: SessionType::Normal,
            target: None,
            resolved: false,
            auth: Auth::Unset,
            params: Params::new(),
            seen: HashSet::new(),
            text: TextBuffer::default(),
            responses: 0,
            declared_mrdsl: false,
        }
    }

    /// When the engine must give up on this login and close.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Feeds one PDU received during login.
    pub fn handle(mut self, pdu: &Pdu<'_>, targets: &[TargetEntry]) -> Step {
        let Header::LoginRequest(req) = pdu.header else {
            self.itt = super::pdu::itt(pdu.bhs);
            return self.refuse(LoginStatus::InvalidDuringLogin);
        };
        self.itt = req.itt;
        if let Err(status) = self.check_header(&req) {
            return self.refuse(status);
        }
        if self.text.push(pdu.data).is_err() || (req.cont && req.transit) {
            return self.refuse(LoginStatus::InitiatorError);
        }
        if req.cont {
            // §6.2: each partial text is acknowledged by an empty response.
            let response = self.response(&req, false, Replies::new());
            return Step::Continue(Box::new(self), response);
        }
        let joined = std::mem::take(&mut self.text);
        let pairs = match text::parse(joined.bytes()) {
            Ok(pairs) => pairs,
            Err(_) => return self.refuse(LoginStatus::InitiatorError),
        };
        match self.apply(&req, &pairs, targets) {
            Ok((replies, transit)) => self.advance(&req, transit, replies),
            Err(status) => self.refuse(status),
        }
    }

    fn check_header(&mut self, req: &LoginRequest) -> Result<(), LoginStatus> {
        match self.first {
            None => {
                // We speak version 0 only (RFC 7143 §11.12.4).
                if req.version_min > 0 {
                    return Err(LoginStatus::UnsupportedVersion);
                }
                if req.tsih != 0 {
                    return Err(LoginStatus::SessionDoesNotExist);
                }
                if req.csg != SECURITY && req.csg != OPERATIONAL {
                    return Err(LoginStatus::InitiatorError);
                }
                self.first = Some(First {
                    isid: req.isid,
                    cid: req.cid,
                });
                self.stage = req.csg;
                self.exp_cmd_sn = req.cmd_sn;
                self.stat_sn = req.exp_stat_sn;
            }
            Some(first) => {
                let same = first.isid == req.isid && first.cid == req.cid && req.tsih == 0;
                if !same || req.csg != self.stage {
                    return Err(LoginStatus::InitiatorError);
                }
            }
        }
        let nsg_ok = req.nsg > req.csg && (req.nsg == OPERATIONAL || req.nsg == FULL_FEATURE);
        if req.transit && !nsg_ok {
            return Err(LoginStatus::InitiatorError);
        }
        Ok(())
    }

    /// Applies the keys of one complete request; returns the replies and
    /// whether the target agrees to the requested transition.
    fn apply(
        &mut self,
        req: &LoginRequest,
        pairs: &[(&str, &str)],
        targets: &[TargetEntry],
    ) -> Result<(Replies, bool), LoginStatus> {
        for (key, _) in pairs {
            if !self.seen.insert((*key).to_owned()) {
                return Err(LoginStatus::InitiatorError);
            }
        }
        self.session_keys(pairs)?;
        let mut replies = Replies::new();
        if !self.resolved {
            self.resolve(targets)?;
            if self.session_type == SessionType::Normal {
                replies.push(("TargetPortalGroupTag".into(), PORTAL_GROUP_TAG.to_string()));
            }
        }
        let credentials = self.target.and_then(|i| targets.get(i));
        let mut chap_keys = Vec::new();
        for &(key, value) in pairs {
            match key {
                "InitiatorName" | "TargetName" | "SessionType" | "InitiatorAlias" => {}
                "AuthMethod" => {
                    let chosen = self.choose_auth(value, credentials)?;
                    replies.push((key.into(), chosen.into()));
                }
                _ if key.starts_with("CHAP_") => chap_keys.push((key, value)),
                _ => {
                    let discovery = self.session_type == SessionType::Discovery;
                    let reply = self.params.answer(&self.limits, key, value, discovery);
                    if let Some(text) = reply.text() {
                        replies.push((key.into(), text.into()));
                    }
                }
            }
        }
        if !chap_keys.is_empty() {
            replies.extend(self.run_chap(&chap_keys, credentials)?);
        }
        let transit = req.transit && self.may_leave_stage(credentials)?;
        // Declared in the operational stage only; a login that skips it
        // leaves both sides at the default (§13.12).
        if self.stage == OPERATIONAL && !self.declared_mrdsl {
            self.declared_mrdsl = true;
            let value = self.params.declare_mrdsl(&self.limits);
            replies.push(("MaxRecvDataSegmentLength".into(), value.to_string()));
        }
        Ok((replies, transit))
    }

    fn session_keys(&mut self, pairs: &[(&str, &str)]) -> Result<(), LoginStatus> {
        for &(key, value) in pairs {
            if !matches!(key, "InitiatorName" | "TargetName" | "SessionType") {
                continue;
            }
            // Names and session type are fixed by the first request.
            if self.resolved {
                return Err(LoginStatus::InitiatorError);
            }
            match key {
                "InitiatorName" => {
                    self.initiator_name = Some(value.into()).filter(|v: &String| !v.is_empty())
                }
                "TargetName" => self.target_name = Some(value.into()),
                _ => {
                    self.session_type = match value {
                        "Normal" => SessionType::Normal,
                        "Discovery" => SessionType::Discovery,
                        _ => return Err(LoginStatus::SessionTypeNotSupported),
                    }
                }
            }
        }
        Ok(())
    }

    /// Finds the target once the first request's keys are in.
    fn resolve(&mut self, targets: &[TargetEntry]) -> Result<(), LoginStatus> {
        self.resolved = true;
        let initiator = self
            .initiator_name
            .as_deref()
            .ok_or(LoginStatus::MissingParameter)?;
        if self.session_type == SessionType::Discovery {
            return Ok(());
        }
        let name = self
            .target_name
            .as_deref()
            .ok_or(LoginStatus::MissingParameter)?;
        let index = find_target(targets, name).ok_or(LoginStatus::NotFound)?;
        let target = targets.get(index).ok_or(LoginStatus::NotFound)?;
        if !target.admits(initiator) {
            return Err(LoginStatus::AuthorizationFailure);
        }
        self.target = Some(index);
        // Skipping the security stage is only for targets without CHAP.
        if self.stage != SECURITY && target.chap.is_some() {
            return Err(LoginStatus::AuthenticationFailure);
        }
        Ok(())
    }

    fn choose_auth(
        &mut self,
        offered: &str,
        target: Option<&TargetEntry>,
    ) -> Result<&'static str, LoginStatus> {
        if self.stage != SECURITY {
            return Err(LoginStatus::InitiatorError);
        }
        let wants = |m: &str| text::list(offered).any(|o| o == m);
        let required = target.is_some_and(|t| t.chap.is_some());
        if required && wants("CHAP") {
            self.auth = Auth::Chap(Chap::AwaitAlgorithm);
            Ok("CHAP")
        } else if !required && wants("None") {
            self.auth = Auth::None;
            Ok("None")
        } else {
            Err(LoginStatus::AuthenticationFailure)
        }
    }

    fn run_chap(
        &mut self,
        keys: &[(&str, &str)],
        target: Option<&TargetEntry>,
    ) -> Result<Replies, LoginStatus> {
        let (Auth::Chap(state), Some(target)) = (&mut self.auth, target) else {
            return Err(LoginStatus::InitiatorError);
        };
        if self.stage != SECURITY {
            return Err(LoginStatus::InitiatorError);
        }
        let creds = target
            .chap
            .as_ref()
            .ok_or(LoginStatus::AuthenticationFailure)?;
        match state.handle(keys, creds, target.mutual_chap.as_ref(), &self.random) {
            Ok(replies) => Ok(replies
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect()),
            Err(_) => Err(LoginStatus::AuthenticationFailure),
        }
    }

    /// Whether the target agrees to leave the current stage.
    fn may_leave_stage(&self, target: Option<&TargetEntry>) -> Result<bool, LoginStatus> {
        if self.stage != SECURITY {
            return Ok(true);
        }
        match &self.auth {
            Auth::None => Ok(true),
            // Not yet: the exchange continues with T=0 (§6.3).
            Auth::Chap(chap) => Ok(chap.is_done()),
            Auth::Unset if target.is_some_and(|t| t.chap.is_some()) => {
                Err(LoginStatus::AuthenticationFailure)
            }
            Auth::Unset => Ok(true),
        }
    }

    fn advance(mut self, req: &LoginRequest, transit: bool, replies: Replies) -> Step {
        let response = self.response(req, transit, replies);
        if !transit {
            return Step::Continue(Box::new(self), response);
        }
        if req.nsg != FULL_FEATURE {
            self.stage = req.nsg;
            return Step::Continue(Box::new(self), response);
        }
        let established = Established {
            params: self.params,
            session_type: self.session_type,
            target: self.target,
            initiator_name: self.initiator_name.unwrap_or_default(),
            isid: self.first.map(|f| f.isid).unwrap_or_default(),
            tsih: self.tsih,
            cid: self.first.map(|f| f.cid).unwrap_or_default(),
            exp_cmd_sn: self.exp_cmd_sn,
            stat_sn: self.stat_sn,
        };
        Step::FullFeature(Box::new(established), response)
    }

    fn response(&mut self, req: &LoginRequest, transit: bool, replies: Replies) -> Response {
        let mut data = Vec::new();
        for (key, value) in &replies {
            text::encode(&mut data, key, value);
        }
        let final_response = transit && req.nsg == FULL_FEATURE;
        let header = LoginResponse {
            transit,
            cont: false,
            csg: req.csg,
            nsg: if transit { req.nsg } else { 0 },
            isid: req.isid,
            tsih: if final_response { self.tsih } else { 0 },
            ..self.status_header(LoginStatus::Success)
        };
        Response { header, data }
    }

    /// A header with the sequence numbers and the given status; advances StatSN.
    fn status_header(&mut self, status: LoginStatus) -> LoginResponse {
        let (status_class, status_detail) = status.code();
        let stat_sn = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        self.responses += 1;
        LoginResponse {
            transit: false,
            cont: false,
            csg: self.stage,
            nsg: 0,
            version_max: 0,
            version_active: 0,
            isid: self.first.map(|f| f.isid).unwrap_or_default(),
            tsih: 0,
            itt: self.itt,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self
                .exp_cmd_sn
                .wrapping_add(self.limits.queue_depth.max(1) - 1),
            status_class,
            status_detail,
        }
    }

    fn refuse(mut self, status: LoginStatus) -> Step {
        let header = self.status_header(status);
        Step::Refused(
            Response {
                header,
                data: Vec::new(),
            },
            status,
        )
    }
}

#[cfg(test)]
mod tests;
