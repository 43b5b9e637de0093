//! A randomised OpenMRS workload at several clinics and at HQ, for the chaos suite: each
//! clinic registers patients, records visits with encounters, obs groups and drug orders,
//! corrects names, amends obs, revises orders, voids encounters and patients, deletes
//! identifiers and whole patients, and sends patients to another clinic (the receiving clinic
//! copies their record and goes on treating them); HQ's data team corrects names of the
//! clinics' patients.
//!
//! What it keeps, so that at the end every clinic must verify equal to HQ:
//! - a patient who moved is never touched again at the clinic they left, and is copied only
//!   once HQ holds that clinic's last version of them (so both copies agree at HQ);
//! - every correction at HQ is followed by a correction of the same name at its clinic (a
//!   clinic's follow-up is retried until it committed), and HQ's configuration lets the site
//!   win on `person_name` (`[hq.conflicts]`), so the clinic's version is the last word;
//! - a statement cut off by a fault (a crashed server, a dropped link) is not retried blindly:
//!   the worker reconnects and goes on, and every operation does nothing when its row is not
//!   there, so a transaction whose fate is unknown never breaks the next one.
//!
//! Every choice comes from a seeded [`Dice`]; the interleaving with faults does not repeat
//! exactly, the choices do. No value is ever printed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use mysql_async::{Conn, Opts};
use tokio::task::JoinHandle;
use tributary::dataset::{self, PatientShape, patient_rows};

use crate::clinical_work::{self as work, ClinicIds, EncounterUuids};
use crate::pipeline::CLINIC;
use crate::wait_until;

/// How long a worker waits for its database to take connections again after a fault.
const RECONNECT: Duration = Duration::from_secs(180);

const GIVEN_NAMES: &[&str] = &[
    "Achieng", "Baraka", "Chausiku", "Dalili", "Eshe", "Faraji", "Gathoni", "Hamisi", "Imani",
    "Jabari",
];

/// SplitMix64: a small deterministic generator (the same seed gives the same choices).
#[derive(Debug, Clone)]
pub struct Dice(u64);

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice(seed)
    }

    pub fn roll(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.roll() % n.max(1)
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low) + 1)
    }

    /// A duration of `low..=high` milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(self.between(low, high))
    }

    /// A generator of its own, seeded from this one.
    pub fn fork(&mut self) -> Dice {
        Dice(self.roll())
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len() as u64) as usize])
    }
}

/// How hard the clinics and HQ work.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadSize {
    /// Pause between two operations of one clinic (a clinic's pace, not a load test).
    pub clinic_pace: Duration,
    /// Pause between two corrections at HQ.
    pub hq_pace: Duration,
    /// The most visits (and encounters per visit) of a newly registered patient.
    pub most_visits: u32,
}

/// A clinic taking part: its site id and how to reach its database.
#[derive(Debug, Clone)]
pub struct ClinicLink {
    pub site_id: String,
    pub opts: Opts,
}

/// What became of a clinic's patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Registered,
    Voided,
    MovedAway,
    Deleted,
}

#[derive(Debug, Clone)]
struct Patient {
    n: u64,
    shape: PatientShape,
    standing: Standing,
    /// HQ is correcting the name right now: no move until its clinic has followed up.
    hq_editing: bool,
    /// HQ corrected the name; the clinic must correct it again.
    follow_up_due: bool,
}

/// A patient `index` of clinic `from`, moving to clinic `to`.
#[derive(Debug, Clone, Copy)]
struct Move {
    from: usize,
    index: usize,
    to: usize,
}

/// What every worker shares: the clinics' patients and orders, moves under way, and counts.
#[derive(Debug, Default)]
struct Registry {
    patients: Vec<Vec<Patient>>,
    /// Per clinic: patients received from another clinic, as (origin clinic, index).
    visiting: Vec<Vec<(usize, usize)>>,
    moves: Vec<Move>,
    /// Per clinic: standing orders (uuid) it wrote.
    orders: Vec<Vec<String>>,
    counts: BTreeMap<&'static str, u64>,
}

impl Registry {
    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }
}

type Shared = Arc<Mutex<Registry>>;

/// The running workload: one task per clinic and one for HQ.
pub struct Workload {
    registry: Shared,
    stop_hq: Arc<AtomicBool>,
    stop_clinics: Arc<AtomicBool>,
    hq: JoinHandle<Result<()>>,
    clinics: Vec<JoinHandle<Result<()>>>,
}

impl Workload {
    /// Starts the clinics' and HQ's work.
    pub fn start(
        clinics: Vec<ClinicLink>,
        hq: Opts,
        size: WorkloadSize,
        mut dice: Dice,
    ) -> Workload {
        let registry: Shared = Arc::new(Mutex::new(Registry {
            patients: vec![Vec::new(); clinics.len()],
            visiting: vec![Vec::new(); clinics.len()],
            orders: vec![Vec::new(); clinics.len()],
            ..Registry::default()
        }));
        let stop_hq = Arc::new(AtomicBool::new(false));
        let stop_clinics = Arc::new(AtomicBool::new(false));
        let workers: Vec<JoinHandle<Result<()>>> = (0..clinics.len())
            .map(|me| {
                let worker = ClinicWorker {
                    me,
                    clinics: clinics.clone(),
                    hq: hq.clone(),
                    registry: registry.clone(),
                    dice: dice.fork(),
                    size,
                    written: 0,
                };
                tokio::spawn(worker.run(stop_clinics.clone()))
            })
            .collect();
        let editor = HqEditor {
            clinics,
            hq,
            registry: registry.clone(),
            dice: dice.fork(),
            size,
        };
        Workload {
            registry,
            hq: tokio::spawn(editor.run(stop_hq.clone())),
            clinics: workers,
            stop_hq,
            stop_clinics,
        }
    }

    /// Stops HQ's corrections, then the clinics (each first makes the follow-ups it owes), and
    /// returns how often each kind of work was done.
    pub async fn stop(self) -> Result<BTreeMap<&'static str, u64>> {
        self.stop_hq.store(true, Ordering::SeqCst);
        self.hq.await.context("the HQ editor panicked")??;
        self.stop_clinics.store(true, Ordering::SeqCst);
        for clinic in self.clinics {
            clinic.await.context("a clinic worker panicked")??;
        }
        let registry = self.registry.lock().unwrap();
        Ok(registry.counts.clone())
    }

    /// True while every task is still working (a task that failed has finished early).
    pub fn is_running(&self) -> bool {
        !self.hq.is_finished() && self.clinics.iter().all(|c| !c.is_finished())
    }
}

/// What a clinic does next.
#[derive(Debug, Clone, Copy)]
enum Task {
    Register,
    RecordEncounter,
    CorrectName,
    AmendObs,
    ReviseOrder,
    VoidEncounter,
    VoidPatient,
    DeleteIdentifier,
    DeletePatient,
    SendAway,
}

/// Tasks and their weights (of 100).
const TASKS: &[(Task, u64)] = &[
    (Task::Register, 24),
    (Task::RecordEncounter, 20),
    (Task::CorrectName, 10),
    (Task::AmendObs, 10),
    (Task::ReviseOrder, 10),
    (Task::VoidEncounter, 7),
    (Task::VoidPatient, 3),
    (Task::DeleteIdentifier, 5),
    (Task::DeletePatient, 4),
    (Task::SendAway, 7),
];

fn choose_task(dice: &mut Dice) -> Task {
    let mut roll = dice.below(TASKS.iter().map(|(_, w)| w).sum());
    for (task, weight) in TASKS {
        if roll < *weight {
            return *task;
        }
        roll -= weight;
    }
    Task::Register
}

/// A connection and the ids of the metadata its database holds.
struct Session {
    conn: Conn,
    ids: ClinicIds,
}

impl Session {
    /// Connects, waiting while the server is down (a fault may have crashed it).
    async fn open(opts: &Opts) -> Result<Session> {
        let mut conn = connect(opts).await?;
        let ids = ClinicIds::load(&mut conn, CLINIC).await?;
        Ok(Session { conn, ids })
    }
}

async fn connect(opts: &Opts) -> Result<Conn> {
    let conn = Mutex::new(None);
    let slot = &conn;
    wait_until("the database to take connections", RECONNECT, || {
        let opts = opts.clone();
        async move {
            let connected = Conn::new(opts).await?;
            *slot.lock().unwrap() = Some(connected);
            Ok(true)
        }
    })
    .await?;
    conn.into_inner().unwrap().context("connected")
}

/// True when `error` says the link to the server broke (a crash, a restart, a dropped
/// connection) or the statement lost a lock race: the work may be done again later.
fn cut_off(error: &anyhow::Error) -> bool {
    match error.downcast_ref::<mysql_async::Error>() {
        Some(mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)) => true,
        // Server shutdown, connection killed, gone away, lost, lock wait timeout, deadlock.
        Some(mysql_async::Error::Server(e)) => {
            matches!(e.code, 1053 | 1205 | 1213 | 1927 | 2006 | 2013)
        }
        _ => false,
    }
}

/// The error with a server's message (which may quote a key or a value) replaced by its
/// code and state.
fn without_values(error: anyhow::Error) -> anyhow::Error {
    match error.downcast_ref::<mysql_async::Error>() {
        Some(mysql_async::Error::Server(e)) => {
            anyhow::anyhow!("server error {} (SQLSTATE {})", e.code, e.state)
        }
        _ => error,
    }
}

struct ClinicWorker {
    me: usize,
    clinics: Vec<ClinicLink>,
    hq: Opts,
    registry: Shared,
    dice: Dice,
    size: WorkloadSize,
    /// Rows written by this worker so far (numbers its new uuids).
    written: u64,
}

impl ClinicWorker {
    async fn run(mut self, stop: Arc<AtomicBool>) -> Result<()> {
        let opts = self.clinics[self.me].opts.clone();
        let mut session = Session::open(&opts).await?;
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            let step = self.follow_up_hq_edits(&mut session).await;
            let step = match step {
                Ok(()) if stopping => return Ok(()),
                Ok(()) => self.do_task(&mut session).await,
                Err(e) => Err(e),
            };
            if let Err(error) = step {
                if !cut_off(&error) {
                    let site = &self.clinics[self.me].site_id;
                    return Err(without_values(error).context(format!("the workload at {site}")));
                }
                session = Session::open(&opts).await?;
            }
            // A clinic's pace: a pause between two pieces of work, not a wait for an effect.
            tokio::time::sleep(self.size.clinic_pace).await;
        }
    }

    fn prefix(&self) -> String {
        prefix_of(&self.clinics[self.me].site_id)
    }

    /// Corrects again, at the clinic, every name HQ corrected: the clinic has the last word.
    async fn follow_up_hq_edits(&mut self, session: &mut Session) -> Result<()> {
        let due: Vec<(usize, Patient)> = {
            let registry = self.registry.lock().unwrap();
            registry.patients[self.me]
                .iter()
                .enumerate()
                .filter(|(_, p)| p.follow_up_due)
                .map(|(i, p)| (i, p.clone()))
                .collect()
        };
        for (index, patient) in due {
            let name = patient_rows(&self.prefix(), patient.n, patient.shape).name;
            // A correction that writes what the row already holds changes nothing, reaches
            // no binlog, and leaves HQ's edit standing: draw again until the row changes (a
            // few times: the name may be gone with its patient).
            let mut changed = false;
            for _ in 0..4 {
                let given = self.given_name();
                let day = self.dice.below(28) as u32;
                if work::correct_name(&mut session.conn, &name, given, day).await? > 0 {
                    changed = true;
                    break;
                }
            }
            let mut registry = self.registry.lock().unwrap();
            registry.patients[self.me][index].follow_up_due = false;
            if changed {
                registry.count("names corrected again at the clinic after HQ");
            }
        }
        Ok(())
    }

    fn given_name(&mut self) -> &'static str {
        GIVEN_NAMES[self.dice.below(GIVEN_NAMES.len() as u64) as usize]
    }

    async fn do_task(&mut self, session: &mut Session) -> Result<()> {
        if self.receive_patient(session).await? {
            return Ok(());
        }
        let task = choose_task(&mut self.dice);
        let Some(index) = self.pick_patient(Standing::Registered) else {
            return self.register(session).await;
        };
        match task {
            Task::Register => self.register(session).await,
            Task::RecordEncounter => self.record_encounter(session, index).await,
            Task::CorrectName => self.correct_name(session, index).await,
            Task::AmendObs => self.amend_obs(session, index).await,
            Task::ReviseOrder => self.revise_order(session).await,
            Task::VoidEncounter => self.void_encounter(session, index).await,
            Task::VoidPatient => self.void_patient(session, index).await,
            Task::DeleteIdentifier => self.delete_identifier(session, index).await,
            Task::DeletePatient => self.delete_patient(session).await,
            Task::SendAway => {
                self.send_away(index);
                Ok(())
            }
        }
    }

    /// A random patient of this clinic in `standing` (HQ not correcting them right now).
    fn pick_patient(&mut self, standing: Standing) -> Option<usize> {
        let registry = self.registry.lock().unwrap();
        let candidates: Vec<usize> = registry.patients[self.me]
            .iter()
            .enumerate()
            .filter(|(_, p)| p.standing == standing && !p.hq_editing)
            .map(|(i, _)| i)
            .collect();
        self.dice.pick(&candidates).copied()
    }

    fn patient(&self, index: usize) -> Patient {
        self.registry.lock().unwrap().patients[self.me][index].clone()
    }

    fn set_standing(&self, index: usize, standing: Standing, what: &'static str) {
        let mut registry = self.registry.lock().unwrap();
        registry.patients[self.me][index].standing = standing;
        registry.count(what);
    }

    fn count(&self, what: &'static str) {
        self.registry.lock().unwrap().count(what);
    }

    fn next_number(&mut self) -> u64 {
        self.written += 1;
        self.written
    }

    async fn register(&mut self, session: &mut Session) -> Result<()> {
        let most = u64::from(self.size.most_visits);
        let shape = PatientShape {
            visits: self.dice.between(1, most) as u32,
            encounters_per_visit: self.dice.between(1, most) as u32,
            obs_per_encounter: self.dice.between(2, 6) as u32,
        };
        let n = self.next_number();
        let prefix = self.prefix();
        dataset::load_patients(&mut session.conn, CLINIC, &prefix, n, 1, shape).await?;
        let mut registry = self.registry.lock().unwrap();
        registry.patients[self.me].push(Patient {
            n,
            shape,
            standing: Standing::Registered,
            hq_editing: false,
            follow_up_due: false,
        });
        registry.count("patients registered");
        Ok(())
    }

    async fn record_encounter(&mut self, session: &mut Session, index: usize) -> Result<()> {
        let patient = self.patient(index);
        let person = patient_rows(&self.prefix(), patient.n, patient.shape).person;
        self.encounter_for(session, &person).await
    }

    /// A visit with an encounter, obs group and drug order for `person` at this clinic.
    async fn encounter_for(&mut self, session: &mut Session, person: &str) -> Result<()> {
        // A namespace apart from the registrations' (whose visits, encounters and obs are
        // numbered by patient).
        let namespace = format!("{}/care", self.prefix());
        let rows = EncounterUuids::new(&namespace, self.next_number());
        let day = self.dice.below(1_000) as u32;
        if work::record_encounter(&mut session.conn, &session.ids, person, &rows, day).await? {
            let mut registry = self.registry.lock().unwrap();
            registry.orders[self.me].push(rows.order);
            registry.count("encounters with an obs group and a drug order");
        }
        Ok(())
    }

    async fn correct_name(&mut self, session: &mut Session, index: usize) -> Result<()> {
        let patient = self.patient(index);
        let name = patient_rows(&self.prefix(), patient.n, patient.shape).name;
        let given = self.given_name();
        let day = self.dice.below(28) as u32;
        if work::correct_name(&mut session.conn, &name, given, day).await? > 0 {
            self.count("names corrected at the clinic");
        }
        Ok(())
    }

    async fn amend_obs(&mut self, session: &mut Session, index: usize) -> Result<()> {
        let patient = self.patient(index);
        let rows = patient_rows(&self.prefix(), patient.n, patient.shape);
        let Some(obs) = self.dice.pick(&rows.obs).cloned() else {
            return Ok(());
        };
        let amended = tributary::dataset::demo_uuid(
            &format!("{}/obs-amended", self.prefix()),
            self.next_number(),
        );
        if work::amend_obs(&mut session.conn, &obs, &amended).await? {
            self.count("obs amended (voided, new version)");
        }
        Ok(())
    }

    async fn revise_order(&mut self, session: &mut Session) -> Result<()> {
        let standing = self.registry.lock().unwrap().orders[self.me].clone();
        let Some(position) = (!standing.is_empty()).then(|| self.dice.below(standing.len() as u64))
        else {
            return Ok(());
        };
        let old = &standing[position as usize];
        let n = self.next_number();
        let new = tributary::dataset::demo_uuid(&format!("{}/order-revision", self.prefix()), n);
        let number = format!("{}-REV-{n}", self.prefix());
        let revised =
            work::revise_order(&mut session.conn, &session.ids, old, &new, &number).await?;
        let mut registry = self.registry.lock().unwrap();
        let orders = &mut registry.orders[self.me];
        orders.retain(|o| o != old);
        if revised {
            orders.push(new);
            registry.count("drug orders revised");
        }
        Ok(())
    }

    async fn void_encounter(&mut self, session: &mut Session, index: usize) -> Result<()> {
        let patient = self.patient(index);
        let rows = patient_rows(&self.prefix(), patient.n, patient.shape);
        let Some(encounter) = self.dice.pick(&rows.encounters).cloned() else {
            return Ok(());
        };
        if work::void_encounter(&mut session.conn, &encounter).await? {
            self.count("encounters voided with their obs");
        }
        Ok(())
    }

    async fn void_patient(&mut self, session: &mut Session, index: usize) -> Result<()> {
        let patient = self.patient(index);
        let person = patient_rows(&self.prefix(), patient.n, patient.shape).person;
        work::void_patient(&mut session.conn, &person).await?;
        self.set_standing(index, Standing::Voided, "patients voided");
        Ok(())
    }

    async fn delete_identifier(&mut self, session: &mut Session, index: usize) -> Result<()> {
        let patient = self.patient(index);
        let identifier = patient_rows(&self.prefix(), patient.n, patient.shape).identifier;
        if work::delete_identifier(&mut session.conn, &identifier).await? {
            self.count("identifiers deleted");
        }
        Ok(())
    }

    /// Deletes a registered or voided patient with all their rows.
    async fn delete_patient(&mut self, session: &mut Session) -> Result<()> {
        let index = match self.pick_patient(Standing::Voided) {
            Some(voided) if self.dice.below(2) == 0 => voided,
            _ => match self.pick_patient(Standing::Registered) {
                Some(index) => index,
                None => return Ok(()),
            },
        };
        let patient = self.patient(index);
        let person = patient_rows(&self.prefix(), patient.n, patient.shape).person;
        work::delete_patient(&mut session.conn, &person).await?;
        self.set_standing(index, Standing::Deleted, "patients deleted");
        Ok(())
    }

    /// The patient leaves for another clinic: never touched here again; the other clinic
    /// copies their record once HQ holds this clinic's last version of it.
    fn send_away(&mut self, index: usize) {
        let others = self.clinics.len() as u64 - 1;
        let to = (self.me + 1 + self.dice.below(others) as usize) % self.clinics.len();
        let mut registry = self.registry.lock().unwrap();
        let patient = &mut registry.patients[self.me][index];
        if patient.standing != Standing::Registered || patient.hq_editing || patient.follow_up_due {
            return;
        }
        patient.standing = Standing::MovedAway;
        registry.moves.push(Move {
            from: self.me,
            index,
            to,
        });
    }

    /// Takes in a patient moving here, once HQ holds the clinic they left as it is; then
    /// records their first encounter here. True when it did (that was this round's work).
    async fn receive_patient(&mut self, session: &mut Session) -> Result<bool> {
        let arriving = {
            let registry = self.registry.lock().unwrap();
            registry.moves.iter().copied().find(|m| m.to == self.me)
        };
        let Some(arriving) = arriving else {
            return Ok(false);
        };
        let origin = &self.clinics[arriving.from];
        let patient = self.registry.lock().unwrap().patients[arriving.from][arriving.index].clone();
        let person = patient_rows(&prefix_of(&origin.site_id), patient.n, patient.shape).person;
        // The other databases may be down (a fault): then the move waits for a later round.
        let (Ok(mut left), Ok(mut hq)) = (
            Conn::new(origin.opts.clone()).await,
            Conn::new(self.hq.clone()).await,
        ) else {
            return Ok(false);
        };
        let at_origin = work::demographics_fingerprint(&mut left, &person).await;
        let at_hq = work::demographics_fingerprint(&mut hq, &person).await;
        let (Ok(at_origin), Ok(at_hq)) = (at_origin, at_hq) else {
            return Ok(false);
        };
        if at_origin.is_some() && at_origin != at_hq {
            return Ok(false);
        }
        // A copy whose commit was cut off by a fault may have committed after all.
        let here = work::demographics_fingerprint(&mut session.conn, &person).await?;
        let copied = here.is_some()
            || (at_origin.is_some()
                && work::copy_patient(&mut left, &mut session.conn, &session.ids, &person).await?);
        {
            let mut registry = self.registry.lock().unwrap();
            registry
                .moves
                .retain(|m| !(m.from == arriving.from && m.index == arriving.index));
            if copied {
                registry.visiting[self.me].push((arriving.from, arriving.index));
                registry.count("patients moved to another clinic");
            }
        }
        if copied {
            self.encounter_for(session, &person).await?;
        }
        Ok(true)
    }
}

/// The uuid namespace of a clinic's patients.
fn prefix_of(site_id: &str) -> String {
    format!("chaos-{site_id}")
}

/// HQ's data team: corrects the name of a random clinic's patient now and then.
struct HqEditor {
    clinics: Vec<ClinicLink>,
    hq: Opts,
    registry: Shared,
    dice: Dice,
    size: WorkloadSize,
}

impl HqEditor {
    async fn run(mut self, stop: Arc<AtomicBool>) -> Result<()> {
        let mut conn = connect(&self.hq).await?;
        while !stop.load(Ordering::SeqCst) {
            // HQ's pace, not a wait for an effect.
            tokio::time::sleep(self.size.hq_pace).await;
            let Some((clinic, index)) = self.begin_edit() else {
                continue;
            };
            let edited = self.correct(&mut conn, clinic, index).await;
            self.end_edit(clinic, index, edited.as_ref().is_ok_and(|n| *n > 0));
            if let Err(error) = edited {
                if !cut_off(&error) {
                    return Err(without_values(error).context("the workload at HQ"));
                }
                conn = connect(&self.hq).await?;
            }
        }
        Ok(())
    }

    /// Chooses a registered patient of a random clinic and marks them as being edited.
    fn begin_edit(&mut self) -> Option<(usize, usize)> {
        let clinic = self.dice.below(self.clinics.len() as u64) as usize;
        let mut registry = self.registry.lock().unwrap();
        let candidates: Vec<usize> = registry.patients[clinic]
            .iter()
            .enumerate()
            .filter(|(_, p)| p.standing == Standing::Registered && !p.hq_editing)
            .map(|(i, _)| i)
            .collect();
        let index = *self.dice.pick(&candidates)?;
        registry.patients[clinic][index].hq_editing = true;
        Some((clinic, index))
    }

    async fn correct(&mut self, conn: &mut Conn, clinic: usize, index: usize) -> Result<u64> {
        let patient = self.registry.lock().unwrap().patients[clinic][index].clone();
        let prefix = prefix_of(&self.clinics[clinic].site_id);
        let name = patient_rows(&prefix, patient.n, patient.shape).name;
        let given = GIVEN_NAMES[self.dice.below(GIVEN_NAMES.len() as u64) as usize];
        work::correct_name(conn, &name, given, self.dice.below(28) as u32).await
    }

    /// The edit is over (done, not needed, or of unknown fate): the clinic follows up.
    fn end_edit(&self, clinic: usize, index: usize, edited: bool) {
        let mut registry = self.registry.lock().unwrap();
        let patient = &mut registry.patients[clinic][index];
        patient.hq_editing = false;
        patient.follow_up_due = true;
        if edited {
            registry.count("names corrected at HQ");
        }
    }
}
