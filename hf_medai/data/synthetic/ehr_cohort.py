"""The synthetic cohort behind `hf_medai.data.synthetic.ehr`: chronic conditions and admission problems (real ICD
codes), patients, and their admissions with outcomes drawn from age, comorbidity, a hidden severity, organ dysfunction, goals of care and frailty.
How the outcomes are tied to the notes is described in `hf_medai.data.synthetic.ehr`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Condition:
    """A chronic condition: codes, how notes name it, home medications, how it moves the outcomes."""

    key: str
    icd9: tuple[str, ...]
    icd10: tuple[str, ...]
    names: tuple[str, ...]
    meds: tuple[str, ...] = ()
    prevalence: float = 0.1  # at age 65
    age_slope: float = 0.3  # change in log-odds of having it per decade of age
    charlson: int = 0  # its Charlson weight, which drives the outcomes below
    requires: str | None = None  # only together with this condition (severe implies mild liver disease)


# fmt: off
CONDITIONS: tuple[Condition, ...] = (
    Condition("chf", ("4280",), ("I5022",), ("Congestive heart failure (EF 25-30%)", "Systolic CHF", "HFrEF"),
              ("furosemide 40 mg PO daily", "carvedilol 12.5 mg PO BID", "lisinopril 10 mg PO daily"), 0.2, 0.5, 1),
    Condition("copd", ("496",), ("J449",), ("COPD on 2L home oxygen", "COPD", "Chronic obstructive pulmonary disease"),
              ("tiotropium 18 mcg inhaled daily", "albuterol inhaler q4h PRN"), 0.15, 0.3, 1),
    Condition("diabetes", ("25000",), ("E119",), ("Type 2 diabetes mellitus", "DM2, diet controlled", "NIDDM"),
              ("metformin 1000 mg PO BID", "glipizide 5 mg PO daily"), 0.18, 0.1, 1),
    Condition("diabetes_complicated", ("25040", "5853"), ("E1122", "N183"),
              ("Type 2 diabetes with nephropathy and neuropathy", "Insulin-dependent DM2 c/b retinopathy"),
              ("insulin glargine 20 units SC qHS", "insulin lispro sliding scale"), 0.08, 0.1, 2),
    Condition("ckd", ("5853",), ("N183",), ("Chronic kidney disease stage III (baseline Cr 1.8)", "CKD stage III"),
              ("calcitriol 0.25 mcg PO daily",), 0.12, 0.4, 2),
    Condition("esrd", ("5856", "V4511"), ("N186", "Z992"),
              ("ESRD on hemodialysis MWF", "End-stage renal disease on HD"),
              ("sevelamer 800 mg PO TID", "nephrocaps 1 cap PO daily"), 0.03, 0.0, 2),
    Condition("old_mi", ("412", "41401"), ("I252", "I2510"),
              ("CAD s/p MI, s/p PCI to LAD", "Coronary artery disease with prior NSTEMI"),
              ("aspirin 81 mg PO daily", "atorvastatin 80 mg PO daily", "metoprolol succinate 50 mg PO daily"),
              0.12, 0.4, 1),
    Condition("pvd", ("4439",), ("I739",), ("Peripheral vascular disease s/p fem-pop bypass", "PVD with claudication"),
              ("cilostazol 100 mg PO BID",), 0.07, 0.4, 1),
    Condition("stroke", ("43889",), ("I69398",),
              ("Prior CVA with mild residual dysarthria", "History of ischemic stroke"),
              ("clopidogrel 75 mg PO daily",), 0.07, 0.5, 1),
    Condition("dementia", ("2900",), ("F0390",), ("Dementia, lives in nursing home", "Alzheimer type dementia"),
              ("donepezil 10 mg PO qHS",), 0.03, 1.2, 1),
    Condition("rheum", ("7140",), ("M069",), ("Rheumatoid arthritis on methotrexate", "Systemic lupus erythematosus"),
              ("methotrexate 15 mg PO weekly", "prednisone 5 mg PO daily"), 0.03, 0.0, 1),
    Condition("pud", ("5339",), ("K279",), ("History of peptic ulcer disease", "PUD with prior upper GI bleed"),
              ("pantoprazole 40 mg PO daily",), 0.04, 0.1, 1),
    Condition("liver", ("5715", "07054"), ("K746", "B182"), ("Hepatitis C cirrhosis, Child-Pugh A", "Cirrhosis"),
              ("nadolol 20 mg PO daily",), 0.05, -0.1, 1),
    Condition("severe_liver", ("5723", "4560"), ("K766", "I8501"),
              ("Decompensated cirrhosis with ascites and varices", "End-stage liver disease, MELD 24"),
              ("lactulose 30 mL PO TID", "rifaximin 550 mg PO BID", "spironolactone 100 mg PO daily"), 0.3, 0.0, 3,
              requires="liver"),
    Condition("cancer", ("1629",), ("C3490",),
              ("Non-small cell lung cancer", "Stage II adenocarcinoma of the lung", "Colon cancer s/p resection"),
              ("ondansetron 8 mg PO q8h PRN",), 0.1, 0.3, 2),
    Condition("metastatic", ("1977",), ("C787",),
              ("Metastatic lung cancer with liver metastases", "Stage IV NSCLC, mets to liver"),
              ("oxycodone 5 mg PO q4h PRN", "dexamethasone 4 mg PO daily"), 0.35, 0.0, 6, requires="cancer"),
    Condition("hiv", ("042",), ("B20",), ("HIV on HAART, last CD4 350", "HIV/AIDS"),
              ("bictegravir/emtricitabine/tenofovir 1 tab PO daily",), 0.01, -0.5, 6),
    Condition("hemiplegia", ("3429",), ("G8190",),
              ("Left hemiplegia after stroke", "Paraplegia after spinal cord injury"),
              ("baclofen 10 mg PO TID",), 0.02, 0.0, 2),
    # Common conditions outside the Charlson index: they make notes and codes realistic, not labels.
    Condition("htn", ("4019",), ("I10",), ("Hypertension", "HTN"), ("amlodipine 5 mg PO daily",), 0.55, 0.4),
    Condition("hld", ("2724",), ("E785",), ("Hyperlipidemia", "HLD"), ("simvastatin 40 mg PO daily",), 0.4, 0.2),
    Condition("afib", ("42731",), ("I4891",), ("Atrial fibrillation on warfarin", "Paroxysmal atrial fibrillation"),
              ("warfarin 5 mg PO daily", "diltiazem 120 mg PO daily"), 0.18, 0.6),
    Condition("hypothyroid", ("2449",), ("E039",), ("Hypothyroidism",), ("levothyroxine 75 mcg PO daily",), 0.1, 0.2),
    Condition("depression", ("311",), ("F329",), ("Depression",), ("sertraline 50 mg PO daily",), 0.12, -0.1),
    Condition("gerd", ("53081",), ("K219",), ("GERD",), ("omeprazole 20 mg PO daily",), 0.15, 0.1),
    Condition("osa", ("32723",), ("G4733",), ("Obstructive sleep apnea on CPAP",), (), 0.06, 0.0),
)
# fmt: on
BY_KEY = {c.key: c for c in CONDITIONS}


@dataclass(frozen=True)
class Problem:
    """Why a patient is admitted: the story of the admission and how it moves severity and stay."""

    key: str
    complaints: tuple[str, ...]
    story: str  # HPI sentence; {symptom} is one of the complaints
    icd9: tuple[str, ...]
    icd10: tuple[str, ...]
    diagnosis: str
    course: str  # hospital course for a survivor
    weight: float
    severity: float = 0.0  # shifts the hidden severity
    los: float = 5.0  # median length of stay (days)
    elective: bool = False
    needs: str | None = None  # only for patients with this condition
    service: str = "MEDICINE"
    procedure: str = "None"
    adds: str | None = None  # chronic condition the stay leaves behind (an MI makes "old_mi")


# fmt: off
PROBLEMS: tuple[Problem, ...] = (
    Problem("sepsis", ("fever and cough", "fever and confusion", "fevers, chills"),
            "presents with {symptom} for 2 days. Chest x-ray in the ED showed a right lower lobe consolidation.",
            ("0389", "486", "99591"), ("A419", "J189", "R6520"), "Sepsis due to right lower lobe pneumonia",
            "Treated for community acquired pneumonia with ceftriaxone and azithromycin, narrowed per cultures. "
            "Fevers resolved and oxygen was weaned to room air.", 3.0, 0.7, 7.0,
            procedure="Central venous catheter placement"),
    Problem("chf_exacerbation", ("shortness of breath", "dyspnea on exertion and leg swelling"),
            "presents with {symptom} and a 6 lb weight gain over one week after running out of diuretics.",
            ("42823",), ("I5023",), "Acute on chronic systolic heart failure",
            "Diuresed with IV furosemide, net negative 6 liters, and transitioned to an oral regimen. "
            "Dry weight estimated at 78 kg.", 2.5, 0.3, 5.0, needs="chf"),
    Problem("copd_exacerbation", ("shortness of breath", "worsening cough and wheezing"),
            "presents with {symptom} for 3 days, using his inhalers more often without relief.",
            ("49121",), ("J441",), "COPD exacerbation",
            "Treated with prednisone, azithromycin and nebulizers with steady improvement in wheezing.",
            2.0, 0.3, 4.0, needs="copd"),
    Problem("gi_bleed", ("melena", "bright red blood per rectum", "coffee ground emesis"),
            "presents with {symptom} since this morning and lightheadedness on standing.",
            ("5789", "2851"), ("K922", "D62"), "Upper GI bleed from a duodenal ulcer",
            "Transfused 2 units of packed red cells. EGD showed a clean-based duodenal ulcer; started on a "
            "proton pump inhibitor twice daily. Hematocrit remained stable.", 1.5, 0.4, 4.0,
            procedure="Esophagogastroduodenoscopy"),
    Problem("nstemi", ("chest pain", "substernal chest pressure"),
            "presents with {symptom} radiating to the left arm, with troponin elevation in the ED.",
            ("41071",), ("I214",), "Non-ST elevation myocardial infarction",
            "Started on heparin, aspirin and a statin. Cardiac catheterization showed a proximal LAD lesion "
            "treated with a drug-eluting stent.", 1.5, 0.2, 3.5, service="CARDIOLOGY",
            procedure="Cardiac catheterization with drug-eluting stent to LAD", adds="old_mi"),
    Problem("stroke", ("left sided weakness", "slurred speech", "right facial droop"),
            "presents with {symptom} that began 3 hours before arrival. CT head showed no hemorrhage.",
            ("43491",), ("I639",), "Acute ischemic stroke, right MCA territory",
            "MRI confirmed a right MCA infarct. Started on aspirin and a statin; seen by physical and "
            "occupational therapy with partial recovery of strength.", 1.2, 0.6, 6.0, service="NEUROLOGY",
            adds="stroke"),
    Problem("aki", ("weakness", "poor oral intake"),
            "presents with {symptom} for several days; creatinine in the ED was three times baseline.",
            ("5849", "2765"), ("N179", "E860"), "Acute kidney injury, prerenal",
            "Held nephrotoxic medications and gave IV fluids; creatinine returned toward baseline.", 1.2, 0.1, 4.0),
    Problem("uti", ("dysuria and fever", "confusion and foul smelling urine"),
            "presents with {symptom}. Urinalysis in the ED was consistent with infection.",
            ("5990",), ("N390",), "Urinary tract infection",
            "Treated with ceftriaxone, narrowed to an oral agent per urine culture sensitivities.",
            1.3, 0.0, 3.5),
    Problem("hepatic_encephalopathy", ("confusion", "increased abdominal distension and confusion"),
            "presents with {symptom} per family, after missing several doses of lactulose.",
            ("5722",), ("K7290",), "Hepatic encephalopathy",
            "Lactulose titrated to 3-4 bowel movements daily with clearing of mental status. Diagnostic "
            "paracentesis was negative for SBP.", 2.0, 0.7, 6.0, needs="severe_liver", procedure="Paracentesis"),
    Problem("syncope", ("syncope", "a fall at home"),
            "presents after {symptom} while getting up from a chair, with brief loss of consciousness.",
            ("7802",), ("R55",), "Syncope, likely orthostatic",
            "Telemetry showed no arrhythmia. Orthostatic on admission, improved with fluids; home "
            "antihypertensives were reduced.", 1.0, -0.8, 2.0),
    Problem("pe", ("pleuritic chest pain", "sudden shortness of breath"),
            "presents with {symptom}. CT angiogram showed bilateral segmental pulmonary emboli.",
            ("41519",), ("I2699",), "Pulmonary embolism",
            "Started on heparin and transitioned to apixaban. Echocardiogram showed no right heart strain.",
            0.8, 0.2, 4.0),
    Problem("dka", ("nausea and vomiting", "abdominal pain and polyuria"),
            "presents with {symptom}; glucose 540 with an anion gap of 24 in the ED.",
            ("25013",), ("E1110",), "Diabetic ketoacidosis",
            "Treated with an insulin drip and fluids per protocol; the anion gap closed and he was transitioned "
            "to subcutaneous insulin.", 0.8, 0.2, 3.0, needs="diabetes"),
    Problem("cabg", ("scheduled coronary artery bypass grafting",),
            "was referred for {symptom} after catheterization showed three vessel disease.",
            ("41401",), ("I2510",), "Coronary artery disease s/p CABG x3",
            "Underwent CABG x3 (LIMA-LAD, SVG-OM, SVG-PDA) without complication, extubated on the day of "
            "surgery and transferred to the floor on post-operative day 1.", 0.9, -0.8, 6.0, elective=True,
            service="CARDIOTHORACIC", procedure="Coronary artery bypass grafting x3"),
    Problem("hip", ("scheduled right total hip arthroplasty",),
            "presents for {symptom} for severe osteoarthritis limiting ambulation.",
            ("71535",), ("M1611",), "Right hip osteoarthritis s/p total hip arthroplasty",
            "Underwent uncomplicated right total hip arthroplasty. Pain controlled on oral medications and "
            "cleared by physical therapy.", 0.8, -1.2, 3.0, elective=True, service="ORTHOPAEDICS",
            procedure="Right total hip arthroplasty"),
    Problem("colectomy", ("scheduled laparoscopic colectomy",),
            "presents for {symptom} for a sigmoid mass found on screening colonoscopy.",
            ("1533",), ("C187",), "Sigmoid colon adenocarcinoma s/p laparoscopic sigmoid colectomy",
            "Underwent laparoscopic sigmoid colectomy. Diet advanced on post-operative day 2; pathology "
            "pending at discharge.", 0.5, -0.6, 4.0, elective=True, service="SURGERY",
            procedure="Laparoscopic sigmoid colectomy", adds="cancer"),
)
RACES = {  # raw MIMIC strings and shares (MIMIC-III, MIMIC-IV)
    "mimic-iii": {"WHITE": 0.66, "WHITE - RUSSIAN": 0.02, "BLACK/AFRICAN AMERICAN": 0.09, "HISPANIC OR LATINO": 0.03,
                  "HISPANIC/LATINO - PUERTO RICAN": 0.01, "ASIAN": 0.02, "ASIAN - CHINESE": 0.01, "OTHER": 0.03,
                  "UNKNOWN/NOT SPECIFIED": 0.09, "UNABLE TO OBTAIN": 0.02, "PATIENT DECLINED TO ANSWER": 0.01,
                  "AMERICAN INDIAN/ALASKA NATIVE": 0.01},
    "mimic-iv": {"WHITE": 0.62, "WHITE - OTHER EUROPEAN": 0.02, "BLACK/AFRICAN AMERICAN": 0.13,
                 "HISPANIC/LATINO - PUERTO RICAN": 0.02, "HISPANIC OR LATINO": 0.03, "ASIAN": 0.02,
                 "ASIAN - CHINESE": 0.02, "OTHER": 0.04, "UNKNOWN": 0.07, "UNABLE TO OBTAIN": 0.02,
                 "PATIENT DECLINED TO ANSWER": 0.01},
}
# fmt: on
MIMIC_IV_YEAR_GROUPS = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022")


UNSEEN_SD = 1.8  # organ dysfunction, seen only by the structured measurements
GOALS_SD = 1.8  # limits of care, seen only in the note's code status


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass
class Patient:
    subject_id: int
    sex: str
    age: float  # at the first admission
    race: str
    conditions: set[str]
    frailty: float
    first_admit: datetime
    marital: str
    language: str
    religion: str
    real_offset: int = 0  # MIMIC-IV: real year minus shifted year
    anchor_year: int = 0
    anchor_year_group: str = ""
    admissions: list[dict] = field(default_factory=list)
    dod: datetime | None = None


class Cohort:
    """Draws patients and admissions, then renders tables and notes in one format."""

    def __init__(self, fmt: str, n_patients: int, seed: int):
        self.fmt, self.rng = fmt, np.random.default_rng(seed)
        self.iv = fmt == "mimic-iv"
        self.n_patients = n_patients

    # -- random helpers
    def pick(self, options: Sequence, p: Sequence[float] | None = None):
        if p is not None:
            p = np.asarray(p, dtype=float) / np.sum(p)
        return options[int(self.rng.choice(len(options), p=p))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    # -- the cohort
    def patients(self) -> list[Patient]:
        low, high = (10_000_000, 19_999_999) if self.iv else (2, 99_999)
        ids = self.rng.choice(high - low, size=self.n_patients, replace=False) + low
        races = RACES[self.fmt]
        out = []
        for sid in sorted(int(i) for i in ids):
            band = self.pick([(18, 40), (40, 60), (60, 80), (80, 90), (90, 99)], [0.08, 0.25, 0.45, 0.17, 0.05])
            age = float(self.rng.uniform(*band))
            conds: set[str] = set()
            for c in CONDITIONS:
                if c.requires and c.requires not in conds:
                    continue
                logit = math.log(c.prevalence / (1 - c.prevalence)) + c.age_slope * (age - 65) / 10
                if self.chance(_sigmoid(logit)):
                    conds.add(c.key)
            if "diabetes_complicated" in conds:
                conds.discard("diabetes")
            if "esrd" in conds:
                conds.discard("ckd")
            year = int(self.rng.integers(2110, 2190))
            first = datetime(year, 1, 1) + timedelta(days=float(self.rng.uniform(0, 365)))
            first = first.replace(second=0, microsecond=0)
            p = Patient(
                subject_id=sid,
                sex=self.pick(["M", "F"], [0.56, 0.44]),
                age=age,
                race=self.pick(list(races), list(races.values())),
                conditions=conds,
                frailty=float(self.rng.normal()),
                first_admit=first,
                marital=self.pick(["MARRIED", "SINGLE", "WIDOWED", "DIVORCED", ""], [0.45, 0.28, 0.14, 0.07, 0.06]),
                language=(
                    self.pick(["ENGLISH", "?"], [0.9, 0.1])
                    if self.iv
                    else self.pick(["ENGL", "SPAN", "RUSS", "PTUN", ""], [0.75, 0.05, 0.03, 0.02, 0.15])
                ),
                religion=self.pick(
                    ["CATHOLIC", "PROTESTANT QUAKER", "JEWISH", "NOT SPECIFIED", "UNOBTAINABLE", "OTHER"],
                    [0.35, 0.13, 0.09, 0.2, 0.13, 0.1],
                ),
            )
            if self.iv:
                group = self.pick(MIMIC_IV_YEAR_GROUPS, [0.22, 0.23, 0.22, 0.21, 0.12])
                p.anchor_year = year - int(self.rng.integers(0, 3))
                p.anchor_year_group = group
                p.real_offset = int(group[:4]) + int(self.rng.integers(0, 3)) - p.anchor_year
            self.admit_all(p)
            out.append(p)
        return out

    def admit_all(self, p: Patient) -> None:
        t, age, planned_next = p.first_admit, p.age, False
        conds = set(p.conditions)
        for _ in range(6):
            adm = self.admission(p, t, age, conds, planned_next)
            p.admissions.append(adm)
            if adm["died"]:
                p.dod = adm["disch"]
                return
            if adm["problem"].adds:
                conds.add(adm["problem"].adds)
            burden = sum(BY_KEY[c].charlson for c in conds)
            logit = (
                -2.9
                + 0.25 * burden
                + 1.1 * p.frailty
                + 0.3 * adm["severity"]
                + 1.0 * (adm["disposition"] == "AMA")
                + 0.4 * (adm["disposition"] == "SNF")
                + self.rng.normal(0, 0.5)
            )
            if self.chance(_sigmoid(logit)):
                gap, planned_next = float(self.rng.uniform(0.3, 30)), self.chance(0.08)
            elif self.chance(0.45):
                gap, planned_next = 31 + float(self.rng.exponential(300)), self.chance(0.15)
            else:
                if self.chance(0.15 * _sigmoid(0.3 * burden + (age - 75) / 10)):  # death after discharge
                    p.dod = adm["disch"] + timedelta(days=float(self.rng.uniform(2, 365)))
                return
            t = (adm["disch"] + timedelta(days=gap)).replace(second=0, microsecond=0)
            age += (t - adm["admit"]).days / 365.25

    def admission(self, p: Patient, t: datetime, age: float, conds: set[str], planned: bool) -> dict:
        options = [pr for pr in PROBLEMS if pr.elective == planned and (pr.needs is None or pr.needs in conds)]
        problem = self.pick(options, [pr.weight for pr in options])
        severity = float(self.rng.normal(problem.severity + 0.2 * (age - 65) / 10, 1.0))
        burden = sum(BY_KEY[c].charlson for c in conds)
        # Mortality has three parts besides age and comorbidity, each seen by different data:
        # - severity (acuity at presentation): the note's vitals and exam, and the first day's monitors and labs;
        # - unseen (organ dysfunction): no note shows it, only the labs and vitals (`ehr_events`);
        # - goals (limits of care the patient or proxy chose): only the note's code status shows it.
        # So notes and structured data each carry risk the other lacks, and fusing them is measurably useful.
        unseen = float(self.rng.normal(0, UNSEEN_SD))
        goals = float(self.rng.normal(0, GOALS_SD))
        died = self.chance(_sigmoid(-4.6 + 0.45 * (age - 65) / 10 + 0.2 * burden + 0.6 * severity + unseen + goals))
        los = problem.los * math.exp(0.3 * severity + 0.06 * burden + 0.1 * (age - 65) / 10 + self.rng.normal(0, 0.45))
        if died:
            los *= float(self.rng.uniform(0.2, 1.2))
        los = max(los, 0.15)
        if died:
            disposition = "DIED"
        else:
            disposition = self.pick(
                ["HOME", "HOME_SERVICES", "SNF", "REHAB", "AMA"],
                [
                    max(0.05, 0.5 - 0.01 * (age - 60)),
                    0.25,
                    0.1 + max(0, 0.01 * (age - 65)),
                    0.08,
                    0.03 + 0.03 * max(p.frailty, 0),
                ],
            )
        disch = (t + timedelta(days=los)).replace(second=0, microsecond=0)  # MIMIC times are to the minute
        return {
            "problem": problem,
            "admit": t,
            "disch": disch,
            "died": died,
            "age": age,
            "severity": severity,
            "unseen": unseen,
            "goals": goals,
            "conds": set(conds),
            "disposition": disposition,
            "hadm_id": int(
                self.rng.integers(20_000_000, 29_999_999) if self.iv else self.rng.integers(100_000, 199_999)
            ),
        }
