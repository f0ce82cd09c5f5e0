"""Synthetic EHR tables and discharge summaries in the exact MIMIC-III or MIMIC-IV layouts.

The offline sample data of the clinical-outcome recipes, read by the same loader as the real thing
(`hf_medai.data.clinical_notes.load_admissions`). Nothing here is real patient data.

How outcomes are tied to what the notes say, with noise, so every task is learnable but not trivial:
- Each patient has an age, chronic conditions (real ICD-9/ICD-10 codes that map to Charlson conditions) and a
  hidden frailty; each admission has a problem (sepsis, heart-failure exacerbation, elective surgery, ...)
  and a hidden severity.
- The admission-time sections show these through noisy proxies: vital signs, lactate, the words of the exam
  ("lethargic", "hypotensive", "intubated"), the past medical history (each condition listed with
  probability 0.85), the social history (frailty).
- Mortality, length of stay and 30-day readmission are drawn from age, comorbidity, severity and frailty,
  plus noise that no text shows. Only the post-admission sections state the outcome: "expired" in the
  hospital course and disposition, the length of the stay, the discharge diagnoses. A model that reads them
  is perfect; one restricted to admission sections is not.
- Charlson labels come from the coded diagnoses: chronic conditions are coded with probability 0.9, and an
  acute MI or stroke during the stay adds its own condition.
MIMIC-III notes carry `[** ... **]` placeholders where PHI was removed; MIMIC-IV notes carry `___`, as the
real MIMIC-IV-Note does. Dates are shifted into 2100-2200 as in MIMIC; MIMIC-III ages over 89 have a date of
birth 300 years before the first admission, MIMIC-IV's have anchor_age 91.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from hf_medai.io import atomic_path, write_text

FORMATS = ("mimic-iii", "mimic-iv")


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
_BY_KEY = {c.key: c for c in CONDITIONS}


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

ALLERGIES = ("No Known Allergies / Adverse Drug Reactions", "Penicillins", "Sulfa (Sulfonamide Antibiotics)",
             "Codeine", "Lisinopril", "Iodine; Iodine Containing")
FAMILY = ("Father with MI at 60. Mother with diabetes.", "Non-contributory.", "Mother with breast cancer.",
          "No family history of early coronary disease or sudden death.", "Brother with colon cancer at 55.")
# Social history by hidden frailty (low -> high); frailty raises readmission.
SOCIAL = (
    ("Lives with wife, independent in all ADLs. Retired teacher. Never smoker, occasional wine.",
     "Lives with husband. Works part time. Quit smoking 20 years ago. No alcohol or drug use.",
     "Lives with family, walks daily. No tobacco, alcohol or illicit drug use."),
    ("Lives with daughter. Uses a cane. Former smoker, 30 pack-years. Rare alcohol.",
     "Lives alone, daughter nearby. Independent but no longer drives. Former smoker."),
    ("Lives alone, limited social support. Active smoker, 1 ppd. Drinks 4-6 beers daily.",
     "Homeless, staying in shelters. Active tobacco and alcohol use. History of missed appointments.",
     "Lives alone, needs help with ADLs, multiple recent falls. History of medication nonadherence."),
)
GENERAL = ("Alert, oriented, in no acute distress.", "Well appearing, comfortable.",
           "Mildly uncomfortable appearing.", "Ill appearing, diaphoretic.", "Lethargic, arousable to voice.",
           "Obtunded, not following commands.", "Intubated and sedated.")
NEURO = ("A&Ox3, CN II-XII intact, moving all extremities.", "A&Ox3, nonfocal.", "Oriented to self only.",
         "Somnolent, does not follow commands consistently.")
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
MIMIC_IV_YEAR_GROUPS = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass
class _Patient:
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


class _Writer:
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
    def patients(self) -> list[_Patient]:
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
            p = _Patient(
                subject_id=sid, sex=self.pick(["M", "F"], [0.56, 0.44]), age=age,
                race=self.pick(list(races), list(races.values())), conditions=conds,
                frailty=float(self.rng.normal()), first_admit=first,
                marital=self.pick(["MARRIED", "SINGLE", "WIDOWED", "DIVORCED", ""], [0.45, 0.28, 0.14, 0.07, 0.06]),
                language=(self.pick(["ENGLISH", "?"], [0.9, 0.1]) if self.iv else
                          self.pick(["ENGL", "SPAN", "RUSS", "PTUN", ""], [0.75, 0.05, 0.03, 0.02, 0.15])),
                religion=self.pick(["CATHOLIC", "PROTESTANT QUAKER", "JEWISH", "NOT SPECIFIED", "UNOBTAINABLE",
                                    "OTHER"], [0.35, 0.13, 0.09, 0.2, 0.13, 0.1]),
            )
            if self.iv:
                group = self.pick(MIMIC_IV_YEAR_GROUPS, [0.22, 0.23, 0.22, 0.21, 0.12])
                p.anchor_year = year - int(self.rng.integers(0, 3))
                p.anchor_year_group = group
                p.real_offset = int(group[:4]) + int(self.rng.integers(0, 3)) - p.anchor_year
            self.admit_all(p)
            out.append(p)
        return out

    def admit_all(self, p: _Patient) -> None:
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
            burden = sum(_BY_KEY[c].charlson for c in conds)
            logit = (-2.9 + 0.25 * burden + 1.1 * p.frailty + 0.3 * adm["severity"]
                     + 1.0 * (adm["disposition"] == "AMA") + 0.4 * (adm["disposition"] == "SNF")
                     + self.rng.normal(0, 0.5))
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

    def admission(self, p: _Patient, t: datetime, age: float, conds: set[str], planned: bool) -> dict:
        options = [pr for pr in PROBLEMS if pr.elective == planned and (pr.needs is None or pr.needs in conds)]
        problem = self.pick(options, [pr.weight for pr in options])
        severity = float(self.rng.normal(problem.severity + 0.2 * (age - 65) / 10, 1.0))
        burden = sum(_BY_KEY[c].charlson for c in conds)
        died = self.chance(_sigmoid(-3.6 + 0.45 * (age - 65) / 10 + 0.2 * burden + 1.25 * severity
                                    + self.rng.normal(0, 0.7)))
        los = problem.los * math.exp(0.3 * severity + 0.06 * burden + 0.1 * (age - 65) / 10
                                     + self.rng.normal(0, 0.45))
        if died:
            los *= float(self.rng.uniform(0.2, 1.2))
        los = max(los, 0.15)
        if died:
            disposition = "DIED"
        else:
            disposition = self.pick(["HOME", "HOME_SERVICES", "SNF", "REHAB", "AMA"],
                                    [max(0.05, 0.5 - 0.01 * (age - 60)), 0.25, 0.1 + max(0, 0.01 * (age - 65)),
                                     0.08, 0.03 + 0.03 * max(p.frailty, 0)])
        disch = (t + timedelta(days=los)).replace(second=0, microsecond=0)  # MIMIC times are to the minute
        return {"problem": problem, "admit": t, "disch": disch, "died": died, "age": age,
                "severity": severity, "conds": set(conds), "disposition": disposition,
                "hadm_id": int(self.rng.integers(20_000_000, 29_999_999) if self.iv else
                               self.rng.integers(100_000, 199_999))}


def write_mimic(out_dir: str | Path, format: str = "mimic-iii", n_patients: int = 600, seed: int = 0,
                gzip: bool = False) -> Path:
    """Write synthetic MIMIC-III or MIMIC-IV tables (and discharge summaries) under `out_dir`; returns it.

    MIMIC-III: ADMISSIONS, PATIENTS, NOTEEVENTS, DIAGNOSES_ICD in `out_dir`. MIMIC-IV: hosp/admissions,
    hosp/patients, hosp/diagnoses_icd and note/discharge. `.csv`, or `.csv.gz` with `gzip`.
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: choose one of {FORMATS}")
    if n_patients < 1:
        raise ValueError("n_patients must be at least 1")
    writer = _Writer(format, n_patients, seed)
    patients = writer.patients()
    _unique_hadm_ids(patients, writer.rng, format == "mimic-iv")
    tables = _tables_iv(patients, writer) if format == "mimic-iv" else _tables_iii(patients, writer)
    out = Path(out_dir)
    suffix = ".csv.gz" if gzip else ".csv"
    for stem, frame in tables.items():
        with atomic_path(out / f"{stem}{suffix}") as tmp:
            frame.to_csv(tmp, index=False, compression="gzip" if gzip else None)
    write_text(out / "SYNTHETIC_DATA.txt", f"Synthetic {format.upper()} sample written by hf_medai "
               f"(n_patients={n_patients}, seed={seed}). Not real patient data.\n")
    return out


def _unique_hadm_ids(patients: list[_Patient], rng: np.random.Generator, iv: bool) -> None:
    seen: set[int] = set()
    for p in patients:
        for a in p.admissions:
            while a["hadm_id"] in seen:
                a["hadm_id"] = int(rng.integers(20_000_000, 29_999_999) if iv else rng.integers(100_000, 199_999))
            seen.add(a["hadm_id"])


def _fmt(t: datetime | None) -> str:
    return "" if t is None else t.strftime("%Y-%m-%d %H:%M:%S")


def _codes(w: _Writer, adm: dict, version: int) -> list[str]:
    """Diagnosis codes of one stay: the problem first, then coded chronic conditions (each with p=0.9)."""
    problem = adm["problem"]
    codes = list(problem.icd10 if version == 10 else problem.icd9)
    for key in sorted(adm["conds"]):
        if w.chance(0.9):
            c = _BY_KEY[key]
            codes += list(c.icd10 if version == 10 else c.icd9)
    if adm["died"] and w.chance(0.5):
        codes.append("R570" if version == 10 else "78551")  # cardiogenic shock, a common terminal code
    seen: set[str] = set()
    return [c for c in codes if not (c in seen or seen.add(c))]


def _tables_iii(patients: list[_Patient], w: _Writer) -> dict[str, pd.DataFrame]:
    pats, adms, notes, dxs = [], [], [], []
    for p in patients:
        first = p.first_admit
        if p.age > 89:  # MIMIC-III: DOB 300 years before the first admission
            dob = first.replace(year=first.year - 300, month=1, day=1, hour=0, minute=0)
        else:
            dob = (first - timedelta(days=p.age * 365.25)).replace(hour=0, minute=0, second=0, microsecond=0)
        dod = p.dod.replace(hour=0, minute=0, second=0, microsecond=0) if p.dod else None
        died_in_hosp = any(a["died"] for a in p.admissions)
        pats.append({"ROW_ID": len(pats) + 1, "SUBJECT_ID": p.subject_id, "GENDER": p.sex, "DOB": _fmt(dob),
                     "DOD": _fmt(dod), "DOD_HOSP": _fmt(dod) if died_in_hosp else "",
                     "DOD_SSN": _fmt(dod) if dod and w.chance(0.7) else "", "EXPIRE_FLAG": int(dod is not None)})
        for a in p.admissions:
            pr, elective = a["problem"], a["problem"].elective
            adm_type = "ELECTIVE" if elective else w.pick(["EMERGENCY", "URGENT"], [0.88, 0.12])
            insurance = ("Medicare" if a["age"] >= 65 and w.chance(0.85) else
                         w.pick(["Private", "Medicaid", "Government", "Self Pay"], [0.6, 0.28, 0.08, 0.04]))
            ed = not elective and adm_type == "EMERGENCY"
            adms.append({
                "ROW_ID": len(adms) + 1, "SUBJECT_ID": p.subject_id, "HADM_ID": a["hadm_id"],
                "ADMITTIME": _fmt(a["admit"]), "DISCHTIME": _fmt(a["disch"]),
                "DEATHTIME": _fmt(a["disch"]) if a["died"] else "", "ADMISSION_TYPE": adm_type,
                "ADMISSION_LOCATION": ("PHYS REFERRAL/NORMAL DELI" if elective else
                                       "EMERGENCY ROOM ADMIT" if ed else "TRANSFER FROM HOSP/EXTRAM"),
                "DISCHARGE_LOCATION": {"DIED": "DEAD/EXPIRED", "HOME": "HOME", "HOME_SERVICES": "HOME HEALTH CARE",
                                       "SNF": "SNF", "REHAB": "REHAB/DISTINCT PART HOSP",
                                       "AMA": "LEFT AGAINST MEDICAL ADVI"}[a["disposition"]],
                "INSURANCE": insurance, "LANGUAGE": p.language, "RELIGION": p.religion,
                "MARITAL_STATUS": p.marital, "ETHNICITY": p.race,
                "EDREGTIME": _fmt(a["admit"] - timedelta(hours=4)) if ed else "",
                "EDOUTTIME": _fmt(a["admit"] + timedelta(minutes=20)) if ed else "",
                "DIAGNOSIS": pr.diagnosis.upper().split(",")[0], "HOSPITAL_EXPIRE_FLAG": int(a["died"]),
                "HAS_CHARTEVENTS_DATA": 1,
            })
            for seq, code in enumerate(_codes(w, a, 9), start=1):
                dxs.append({"ROW_ID": len(dxs) + 1, "SUBJECT_ID": p.subject_id, "HADM_ID": a["hadm_id"],
                            "SEQ_NUM": seq, "ICD9_CODE": code})
            base = {"SUBJECT_ID": p.subject_id, "HADM_ID": a["hadm_id"], "CGID": "", "ISERROR": ""}
            notes.append({**base, "CHARTDATE": a["disch"].strftime("%Y-%m-%d"), "CHARTTIME": "", "STORETIME": "",
                          "CATEGORY": "Discharge summary", "DESCRIPTION": "Report",
                          "TEXT": _note(w, p, a, dob)})
            if w.chance(0.3):  # other note types the loader must skip
                t = a["admit"] + timedelta(hours=3)
                notes.append({**base, "CHARTDATE": t.strftime("%Y-%m-%d"), "CHARTTIME": _fmt(t), "STORETIME": "",
                              "CATEGORY": "Radiology", "DESCRIPTION": "CHEST (PORTABLE AP)", "CGID": "",
                              "TEXT": f"[**{t:%Y-%m-%d}**] 3:12 AM\n CHEST (PORTABLE AP)\n FINAL REPORT\n"
                                      " IMPRESSION: No acute cardiopulmonary process.\n"})
            if w.chance(0.05):  # addenda come after discharge and may know later events: never used
                notes.append({**base, "CHARTDATE": (a["disch"] + timedelta(days=3)).strftime("%Y-%m-%d"),
                              "CHARTTIME": "", "STORETIME": "", "CATEGORY": "Discharge summary",
                              "DESCRIPTION": "Addendum",
                              "TEXT": "Addendum:\nPatient was seen in clinic after discharge; expired medications "
                                      "were renewed.\n"})
    for i, n in enumerate(notes, start=1):
        n["ROW_ID"] = i
    note_cols = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME", "CATEGORY",
                 "DESCRIPTION", "CGID", "ISERROR", "TEXT"]
    return {"PATIENTS": pd.DataFrame(pats), "ADMISSIONS": pd.DataFrame(adms),
            "NOTEEVENTS": pd.DataFrame(notes)[note_cols], "DIAGNOSES_ICD": pd.DataFrame(dxs)}


def _tables_iv(patients: list[_Patient], w: _Writer) -> dict[str, pd.DataFrame]:
    pats, adms, notes, dxs = [], [], [], []
    providers = [f"P{int(x):05X}" for x in w.rng.integers(0x10000, 0xFFFFF, size=60)]
    for p in patients:
        anchor_age = int(p.age - (p.first_admit.year - p.anchor_year))
        pats.append({"subject_id": p.subject_id, "gender": p.sex, "anchor_age": 91 if anchor_age > 89 else anchor_age,
                     "anchor_year": p.anchor_year, "anchor_year_group": p.anchor_year_group,
                     "dod": p.dod.strftime("%Y-%m-%d") if p.dod else ""})
        for seq, a in enumerate(p.admissions):
            pr, elective = a["problem"], a["problem"].elective
            adm_type = (w.pick(["ELECTIVE", "SURGICAL SAME DAY ADMISSION"], [0.4, 0.6]) if elective else
                        w.pick(["EW EMER.", "URGENT", "OBSERVATION ADMIT", "DIRECT EMER.", "EU OBSERVATION"],
                               [0.6, 0.15, 0.12, 0.06, 0.07]))
            insurance = ("Medicare" if a["age"] >= 65 and w.chance(0.85) else
                         w.pick(["Private", "Medicaid", "Other"], [0.55, 0.3, 0.15]))
            ed = adm_type in ("EW EMER.", "EU OBSERVATION", "OBSERVATION ADMIT")
            adms.append({
                "subject_id": p.subject_id, "hadm_id": a["hadm_id"], "admittime": _fmt(a["admit"]),
                "dischtime": _fmt(a["disch"]), "deathtime": _fmt(a["disch"]) if a["died"] else "",
                "admission_type": adm_type, "admit_provider_id": w.pick(providers),
                "admission_location": ("PHYSICIAN REFERRAL" if elective else
                                       "EMERGENCY ROOM" if ed else "TRANSFER FROM HOSPITAL"),
                "discharge_location": {"DIED": "DIED", "HOME": "HOME", "HOME_SERVICES": "HOME HEALTH CARE",
                                       "SNF": "SKILLED NURSING FACILITY", "REHAB": "REHAB",
                                       "AMA": "AGAINST ADVICE"}[a["disposition"]],
                "insurance": insurance, "language": p.language, "marital_status": p.marital, "race": p.race,
                "edregtime": _fmt(a["admit"] - timedelta(hours=5)) if ed else "",
                "edouttime": _fmt(a["admit"] + timedelta(minutes=15)) if ed else "",
                "hospital_expire_flag": int(a["died"]),
            })
            real_month = (a["admit"].year + p.real_offset, a["admit"].month)
            version = 10 if real_month >= (2015, 10) else 9  # the US switched to ICD-10-CM in October 2015
            for s, code in enumerate(_codes(w, a, version), start=1):
                dxs.append({"subject_id": p.subject_id, "hadm_id": a["hadm_id"], "seq_num": s, "icd_code": code,
                            "icd_version": version})
            note_seq = 20 + 3 * seq
            notes.append({"note_id": f"{p.subject_id}-DS-{note_seq}", "subject_id": p.subject_id,
                          "hadm_id": a["hadm_id"], "note_type": "DS", "note_seq": note_seq,
                          "charttime": a["disch"].strftime("%Y-%m-%d 00:00:00"),
                          "storetime": _fmt(a["disch"] + timedelta(days=float(w.rng.uniform(0.5, 3)))),
                          "text": _note(w, p, a, None)})
    return {"hosp/patients": pd.DataFrame(pats), "hosp/admissions": pd.DataFrame(adms),
            "hosp/diagnoses_icd": pd.DataFrame(dxs), "note/discharge": pd.DataFrame(notes)}


# ---------------------------------------------------------------------------------------------------------------
# The discharge summary
# ---------------------------------------------------------------------------------------------------------------


def _note(w: _Writer, p: _Patient, a: dict, dob: datetime | None) -> str:
    """A discharge summary in the section order of real MIMIC notes (Allergies before Chief Complaint,
    Medications on Admission after the hospital course, as MIMIC writes them)."""
    iv, rng = w.iv, w.rng
    blank = " \n" if iv else "\n"

    def date(t: datetime) -> str:
        return "___" if iv else f"[**{t.year}-{t.month}-{t.day}**]"

    def name(kind: str = "Doctor Last Name") -> str:
        return "___" if iv else f"[**{kind} {int(rng.integers(10, 9999))}**]"

    pr: Problem = a["problem"]
    he, his = ("He", "his") if p.sex == "M" else ("She", "her")
    man = "man" if p.sex == "M" else "woman"
    age = int(a["age"])
    age_text = (("___" if iv else "[**Age over 90 **]") if a["age"] > 89 else str(age))
    sev = a["severity"]
    seen = sev + float(rng.normal(0, 0.55))  # what the admitting team could see
    conds = [_BY_KEY[k] for k in sorted(a["conds"])]
    listed = [c for c in conds if w.chance(0.85)]

    # Vital signs and exam, noisy functions of severity.
    hr = int(np.clip(82 + 14 * seen + rng.normal(0, 8), 45, 170))
    sbp = int(np.clip(132 - 17 * seen + rng.normal(0, 12), 60, 210))
    dbp = int(np.clip(sbp * 0.58 + rng.normal(0, 6), 30, 120))
    rr = int(np.clip(17 + 3.5 * seen + rng.normal(0, 2), 10, 42))
    spo2 = int(np.clip(97 - 2.5 * max(seen, 0) + rng.normal(0, 1.5), 70, 100))
    temp = round(float(37.0 + (0.8 if pr.key in ("sepsis", "uti") else 0.1) * max(seen, 0) + rng.normal(0, 0.3)), 1)
    lactate = round(float(np.clip(1.2 + 1.3 * max(seen, 0) + rng.normal(0, 0.5), 0.5, 14)), 1)
    general = GENERAL[int(np.clip(round(1.2 + 1.4 * seen + rng.normal(0, 0.4)), 0, len(GENERAL) - 1))]
    neuro = NEURO[int(np.clip(round(0.6 + 1.0 * seen + rng.normal(0, 0.4)), 0, len(NEURO) - 1))]
    ed = []
    if pr.elective:
        ed.append(f"{he} was admitted directly on the day of the procedure.")
    else:
        ed.append(f"In the ED, initial vitals were T {temp} HR {hr} BP {sbp}/{dbp} RR {rr} O2 sat {spo2}% on "
                  f"{'RA' if spo2 > 93 else 'NRB'}. Lactate was {lactate}.")
        if seen > 1.6:
            ed.append(f"{he} was persistently hypotensive despite 3L of IV fluids and was started on "
                      "norepinephrine; intubated for hypoxemic respiratory failure and admitted to the MICU.")
        elif seen > 0.8:
            ed.append(f"{he} was hypotensive and tachycardic, received 2L of IV fluids with partial response, and "
                      "was admitted to the ICU for close monitoring.")
        elif seen < -0.5:
            ed.append(f"{he} was hemodynamically stable and comfortable in the ED.")
    pmh_names = [w.pick(c.names) for c in listed]
    article = "an" if age_text == "18" or (len(age_text) == 2 and age_text[0] == "8") else "a"
    hpi = (f"{'Mr.' if p.sex == 'M' else 'Ms.'} {name('Known lastname')} is {article} {age_text} year old {man} with "
           f"{', '.join(pmh_names[:3]) if pmh_names else 'no significant past medical history'} who "
           f"{pr.story.format(symptom=w.pick(pr.complaints))} " + " ".join(ed))
    meds = [m for c in conds for m in c.meds]
    social = w.pick(SOCIAL[int(np.clip(round(1 + 0.9 * p.frailty + rng.normal(0, 0.4)), 0, 2))])

    findings = {
        "Vitals": f"T {temp} BP {sbp}/{dbp} HR {hr} RR {rr} O2 {spo2}% {'RA' if spo2 > 93 else '4L NC'}",
        "General": general,
        "HEENT": "Dry mucous membranes" if seen > 0.5 else "MMM, oropharynx clear",
        "Neck": "JVP elevated to the angle of the jaw" if pr.key == "chf_exacerbation" else "Supple, JVP not elevated",
        "Lungs": {"sepsis": "Crackles at the right base", "copd_exacerbation": "Diffuse wheezes"}.get(
            pr.key, "Clear to auscultation bilaterally"),
        "CV": ("Tachycardic, regular" if hr > 100 else "Regular rate and rhythm") + ", no murmurs",
        "Abdomen": ("Distended with shifting dullness" if "severe_liver" in a["conds"] else
                    "Soft, non-tender, non-distended"),
        "Ext": "2+ pitting edema to the knees" if "chf" in a["conds"] else "Warm, no edema",
        "Neuro": neuro,
    }
    exam = "\n".join(f"{k}: {v}" for k, v in findings.items())

    died = a["died"]
    days = max(1, round((a["disch"] - a["admit"]).total_seconds() / 86400))
    if died:
        course = (f"{age_text} year old {man} admitted with {pr.diagnosis.lower()}. Despite maximal support "
                  f"{his} condition continued to worsen over a {days} day hospitalization. After a family meeting "
                  f"{he.lower()} was made comfort measures only and expired on {date(a['disch'])}. "
                  "The family declined autopsy.")
        dispo, condition = "Expired", "Expired"
        discharge_meds, instructions, followup = "None", "N/A", "N/A"
    else:
        extra = (" The course was prolonged by deconditioning and a hospital acquired infection, and physical "
                 "therapy recommended rehab." if days >= 10 else "")
        course = f"{pr.course}{extra} Total length of stay was {days} days."
        if a["disposition"] == "AMA":
            course += f" {he} left against medical advice before the planned work-up was complete."
        if p.frailty + rng.normal(0, 0.5) > 0.8:
            course += (" Social work was consulted for concerns about safety at home and difficulty affording "
                       "medications.")
        dispo = {"HOME": "Home", "HOME_SERVICES": "Home With Service", "SNF": "Extended Care",
                 "REHAB": "Extended Care", "AMA": "Left against medical advice"}[a["disposition"]]
        condition = ("Mental Status: Clear and coherent.\nLevel of Consciousness: Alert and interactive.\n"
                     "Activity Status: Ambulatory - Independent." if iv else "Stable, ambulating, tolerating a diet.")
        discharge_meds = "\n".join(f"{i}. {m}" for i, m in enumerate(meds + ["acetaminophen 650 mg PO q6h PRN"], 1))
        instructions = (f"{'Dear Mr.' if p.sex == 'M' else 'Dear Ms.'} {name('Known lastname')},\n\nYou were "
                        f"admitted for {pr.diagnosis.lower()}. Please take your medications as prescribed and "
                        "return to the emergency department for fever, chest pain or shortness of breath.")
        followup = (f"Please follow up with {name('First Name')} {name('Last Name')} in 1 week. "
                    f"Phone: {name('Telephone/Fax (1)')}")
    secondary = "\n".join(c.names[0] for c in conds if w.chance(0.7))
    labs_t = "___" if iv else date(a["admit"])
    results = (f"{labs_t} 08:15PM BLOOD WBC-{round(float(np.clip(9 + 4 * max(seen, 0) + rng.normal(0, 2), 1, 40)), 1)} "
               f"Hgb-{round(float(rng.normal(11.5, 1.5)), 1)} Plt-{int(rng.normal(230, 60))}\n"
               f"{labs_t} 08:15PM BLOOD Glucose-{int(rng.normal(140, 30))} BUN-{int(rng.normal(25, 10))} "
               f"Creat-{round(float(abs(rng.normal(1.3, 0.5))), 1)} Na-{int(rng.normal(138, 3))} "
               f"K-{round(float(rng.normal(4.2, 0.4)), 1)}\n{labs_t} 08:22PM BLOOD Lactate-{lactate}")
    if iv:
        header = (f" \nName:  ___                     Unit No:   ___\n \nAdmission Date:  ___              "
                  f"Discharge Date:   ___\n \nDate of Birth:  ___             Sex:   {p.sex}\n \n")
        exam = f"ADMISSION PHYSICAL EXAM:\n========================\n{exam}"
        if not died:
            exam += ("\n\nDISCHARGE PHYSICAL EXAM:\n========================\nVitals: afebrile, stable\n"
                     "General: Comfortable, in no distress")
        results = f"ADMISSION LABS:\n===============\n{results}"
    else:
        header = (f"Admission Date:  {date(a['admit'])}              Discharge Date:   {date(a['disch'])}\n\n"
                  f"Date of Birth:  {date(dob)}             Sex:   {p.sex}\n\n")
        if not died:
            exam += "\n\nDischarge exam:\nAfebrile, vital signs stable, comfortable."
    sections = [
        ("Service", pr.service, True),
        ("Allergies", w.pick(ALLERGIES), False),
        ("Attending", name("First Name3 (LF)") + ("." if iv else ""), True),
        ("Chief Complaint", w.pick(pr.complaints), False),
        ("Major Surgical or Invasive Procedure", pr.procedure if not died else
         "Intubation, central line placement", False),
        ("History of Present Illness", hpi, False),
        ("Past Medical History", "\n".join(f"- {n}" for n in pmh_names) or "None", False),
        ("Social History", "___" if iv and w.chance(0.3) else social, False),
        ("Family History", w.pick(FAMILY), False),
        ("Physical Exam", exam, False),
        ("Pertinent Results", results, False),
        ("Brief Hospital Course", course, False),
        ("Medications on Admission", "\n".join(f"{i}. {m}" for i, m in enumerate(meds, 1)) or "None", False),
        ("Discharge Medications", discharge_meds, False),
        ("Discharge Disposition", dispo, False),
        ("Discharge Diagnosis", f"Primary: {pr.diagnosis}\nSecondary:\n{secondary or 'None'}", False),
        ("Discharge Condition", condition, False),
        ("Discharge Instructions", instructions, False),
        ("Followup Instructions", followup, False),
    ]
    body = "".join(f"{title}: {text}\n{blank}" if inline else f"{title}:\n{text}\n{blank}"
                   for title, text, inline in sections)
    signature = "" if iv else (f"\n                             {name('First Name11 (Name Pattern1)')} "
                               f"{name('Last Name (NamePattern4)')} MD {name('MD Number(1)')}\n\n"
                               f"Completed by:{date(a['disch'] + timedelta(days=2))}\n")
    return header + body + signature
