//! An org's contact directory: the log of contacts, handles, attributes, consent, certificates
//! and revocations, with its derived state.

mod state;

use std::collections::BTreeSet;

pub use state::{ContactRecord, DirectoryState};

use crate::auth::{self, Certificates};
use crate::dag::{Dag, Inserted, OrderKey};
use crate::event::{DirectoryKind, EventKind, Scope, VerifiedEvent};
use crate::id::ContactId;
use crate::key::{OrgId, SecretKey};
use crate::thread::IngestError;
use crate::time::Timestamp;
use crate::{codec::EncodeError, event::Draft, event::Event};

/// One org's directory: the DAG, the derived state and the certificates it publishes.
#[derive(Debug, Clone)]
pub struct Directory {
    org: OrgId,
    dag: Dag,
    state: DirectoryState,
    erased: BTreeSet<ContactId>,
    certificates: Certificates,
}

/// The genesis event of `org_key`'s directory. Every node computes the same bytes.
pub fn genesis(org_key: &SecretKey) -> Result<Event, EncodeError> {
    let org = OrgId(org_key.public());
    Draft::new(
        Scope::Directory(org),
        Vec::new(),
        0,
        Timestamp::EPOCH,
        EventKind::Directory(DirectoryKind::Genesis),
    )
    .sign(org_key)
}

impl Directory {
    /// A directory from its verified genesis event.
    pub fn new(genesis: VerifiedEvent) -> Result<Self, IngestError> {
        let (Scope::Directory(org), EventKind::Directory(DirectoryKind::Genesis)) =
            (genesis.header().scope, &genesis.header().kind)
        else {
            return Err(IngestError::NotARoot {
                expected: "directory",
                found: genesis.header().kind.name(),
            });
        };
        Ok(Directory {
            org,
            dag: Dag::new(genesis)?,
            state: DirectoryState::new(org),
            erased: BTreeSet::new(),
            certificates: Certificates::new(),
        })
    }

    /// The org.
    pub fn org(&self) -> OrgId {
        self.org
    }

    /// The DAG.
    pub fn dag(&self) -> &Dag {
        &self.dag
    }

    /// The derived state.
    pub fn state(&self) -> &DirectoryState {
        &self.state
    }

    /// The certificates and revocations this directory publishes (all verified).
    pub fn certificates(&self) -> &Certificates {
        &self.certificates
    }

    /// Checks and inserts one verified event, parents first. Directory events are authorised
    /// against this directory's own certificates.
    pub fn insert(
        &mut self,
        event: VerifiedEvent,
        now: Timestamp,
    ) -> Result<Inserted, IngestError> {
        if self.dag.check(&event)? {
            return Ok(Inserted::Duplicate);
        }
        auth::check_directory_event(&event, self.org, &self.certificates, now)?;
        self.insert_authorised(event);
        Ok(Inserted::New)
    }

    /// Rebuilds a directory from events read back from the node's own store, genesis first and
    /// parents first (the linear order is). They passed the auth rules before they were stored,
    /// so only the DAG rules run again.
    pub fn restore(events: impl IntoIterator<Item = VerifiedEvent>) -> Result<Self, IngestError> {
        let mut events = events.into_iter();
        let genesis = events.next().ok_or(IngestError::NotARoot {
            expected: "directory",
            found: "nothing",
        })?;
        let mut directory = Directory::new(genesis)?;
        for event in events {
            if !directory.dag.check(&event)? {
                directory.insert_authorised(event);
            }
        }
        Ok(directory)
    }

    fn insert_authorised(&mut self, mut event: VerifiedEvent) {
        if state::content_erased(&event, &self.erased) {
            event.erase_content();
        }
        let key = OrderKey::of(&event);
        let appended = self.dag.last_key().is_none_or(|last| key > last);
        let changes_erasure = matches!(
            event.header().kind,
            EventKind::Directory(DirectoryKind::Merge { .. } | DirectoryKind::EraseContact { .. })
        );
        match &event.header().kind {
            EventKind::Directory(DirectoryKind::Certify { certificate }) => {
                // Certificates are verified by the auth rules before they are stored.
                let _ = self
                    .certificates
                    .insert(crate::Certificate::clone(certificate));
            }
            EventKind::Directory(DirectoryKind::Revoke {
                subject,
                effective_from,
            }) => self.certificates.revoke(*subject, *effective_from),
            _ => {}
        }
        if appended && !changes_erasure {
            self.state.apply(&event, &self.erased);
            self.dag.insert_checked(event);
        } else {
            self.dag.insert_checked(event);
            self.refold();
        }
    }

    /// The state computed from scratch. Equal to [`Directory::state`] at all times.
    pub fn fold_from_scratch(&self) -> DirectoryState {
        let erased = state::erased_contacts(self.dag.iter_ordered());
        let mut state = DirectoryState::new(self.org);
        for event in self.dag.iter_ordered().skip(1) {
            state.apply(event, &erased);
        }
        state
    }

    fn refold(&mut self) {
        self.erased = state::erased_contacts(self.dag.iter_ordered());
        self.state = self.fold_from_scratch();
        let to_erase: Vec<_> = self
            .dag
            .iter_ordered()
            .filter(|e| e.content().is_some() && state::content_erased(e, &self.erased))
            .map(|e| e.id())
            .collect();
        for id in to_erase {
            self.dag.erase_content(&id);
        }
    }
}
