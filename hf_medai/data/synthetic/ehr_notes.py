"""Discharge summaries of the synthetic cohort in the section order of real MIMIC notes, with MIMIC-III's `[** **]`
or MIMIC-IV's `___` where PHI was removed. The admission-time sections show the hidden state through noisy proxies;
only the sections written after the outcome state it (see `hf_medai.data.synthetic.ehr`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from hf_medai.data.synthetic.ehr_cohort import BY_KEY, GOALS_SD, Cohort, Patient, Problem

ALLERGIES = (
    "No Known Allergies / Adverse Drug Reactions",
    "Penicillins",
    "Sulfa (Sulfonamide Antibiotics)",
    "Codeine",
    "Lisinopril",
    "Iodine; Iodine Containing",
)
FAMILY = (
    "Father with MI at 60. Mother with diabetes.",
    "Non-contributory.",
    "Mother with breast cancer.",
    "No family history of early coronary disease or sudden death.",
    "Brother with colon cancer at 55.",
)
# Social history by hidden frailty (low -> high); frailty raises readmission.
SOCIAL = (
    (
        "Lives with wife, independent in all ADLs. Retired teacher. Never smoker, occasional wine.",
        "Lives with husband. Works part time. Quit smoking 20 years ago. No alcohol or drug use.",
        "Lives with family, walks daily. No tobacco, alcohol or illicit drug use.",
    ),
    (
        "Lives with daughter. Uses a cane. Former smoker, 30 pack-years. Rare alcohol.",
        "Lives alone, daughter nearby. Independent but no longer drives. Former smoker.",
    ),
    (
        "Lives alone, limited social support. Active smoker, 1 ppd. Drinks 4-6 beers daily.",
        "Homeless, staying in shelters. Active tobacco and alcohol use. History of missed appointments.",
        "Lives alone, needs help with ADLs, multiple recent falls. History of medication nonadherence.",
    ),
)
GENERAL = (
    "Alert, oriented, in no acute distress.",
    "Well appearing, comfortable.",
    "Mildly uncomfortable appearing.",
    "Ill appearing, diaphoretic.",
    "Lethargic, arousable to voice.",
    "Obtunded, not following commands.",
    "Intubated and sedated.",
)
NEURO = (
    "A&Ox3, CN II-XII intact, moving all extremities.",
    "A&Ox3, nonfocal.",
    "Oriented to self only.",
    "Somnolent, does not follow commands consistently.",
)


def discharge_summary(w: Cohort, p: Patient, a: dict, dob: datetime | None) -> str:
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
    age_text = ("___" if iv else "[**Age over 90 **]") if a["age"] > 89 else str(age)
    sev = a["severity"]
    seen = sev + float(rng.normal(0, 0.55))  # what the admitting team could see
    conds = [BY_KEY[k] for k in sorted(a["conds"])]
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
        ed.append(
            f"In the ED, initial vitals were T {temp} HR {hr} BP {sbp}/{dbp} RR {rr} O2 sat {spo2}% on "
            f"{'RA' if spo2 > 93 else 'NRB'}. Lactate was {lactate}."
        )
        if seen > 1.6:
            ed.append(
                f"{he} was persistently hypotensive despite 3L of IV fluids and was started on "
                "norepinephrine; intubated for hypoxemic respiratory failure and admitted to the MICU."
            )
        elif seen > 0.8:
            ed.append(
                f"{he} was hypotensive and tachycardic, received 2L of IV fluids with partial response, and "
                "was admitted to the ICU for close monitoring."
            )
        elif seen < -0.5:
            ed.append(f"{he} was hemodynamically stable and comfortable in the ED.")
    # Code status, in the one-line summary as clinicians write it: the only place the admission's goals of care (a
    # part of the mortality risk) show.
    limits = a["goals"] / GOALS_SD + float(rng.normal(0, 0.3))
    code = "DNR/DNI" if limits > 0.9 else "DNR, okay to intubate" if limits > -0.3 else "full code"
    pmh_names = [w.pick(c.names) for c in listed]
    article = "an" if age_text == "18" or (len(age_text) == 2 and age_text[0] == "8") else "a"
    hpi = (
        f"{'Mr.' if p.sex == 'M' else 'Ms.'} {name('Known lastname')} is {article} {age_text} year old {man} with "
        f"{', '.join(pmh_names[:3]) if pmh_names else 'no significant past medical history'}, {code}, who "
        f"{pr.story.format(symptom=w.pick(pr.complaints))} " + " ".join(ed)
    )
    meds = [m for c in conds for m in c.meds]
    social = w.pick(SOCIAL[int(np.clip(round(1 + 0.9 * p.frailty + rng.normal(0, 0.4)), 0, 2))])

    findings = {
        "Vitals": f"T {temp} BP {sbp}/{dbp} HR {hr} RR {rr} O2 {spo2}% {'RA' if spo2 > 93 else '4L NC'}",
        "General": general,
        "HEENT": "Dry mucous membranes" if seen > 0.5 else "MMM, oropharynx clear",
        "Neck": "JVP elevated to the angle of the jaw" if pr.key == "chf_exacerbation" else "Supple, JVP not elevated",
        "Lungs": {"sepsis": "Crackles at the right base", "copd_exacerbation": "Diffuse wheezes"}.get(
            pr.key, "Clear to auscultation bilaterally"
        ),
        "CV": ("Tachycardic, regular" if hr > 100 else "Regular rate and rhythm") + ", no murmurs",
        "Abdomen": (
            "Distended with shifting dullness" if "severe_liver" in a["conds"] else "Soft, non-tender, non-distended"
        ),
        "Ext": "2+ pitting edema to the knees" if "chf" in a["conds"] else "Warm, no edema",
        "Neuro": neuro,
    }
    exam = "\n".join(f"{k}: {v}" for k, v in findings.items())

    died = a["died"]
    days = max(1, round((a["disch"] - a["admit"]).total_seconds() / 86400))
    if died:
        course = (
            f"{age_text} year old {man} admitted with {pr.diagnosis.lower()}. Despite maximal support "
            f"{his} condition continued to worsen over a {days} day hospitalization. After a family meeting "
            f"{he.lower()} was made comfort measures only and expired on {date(a['disch'])}. "
            "The family declined autopsy."
        )
        dispo, condition = "Expired", "Expired"
        discharge_meds, instructions, followup = "None", "N/A", "N/A"
    else:
        extra = (
            " The course was prolonged by deconditioning and a hospital acquired infection, and physical "
            "therapy recommended rehab."
            if days >= 10
            else ""
        )
        course = f"{pr.course}{extra} Total length of stay was {days} days."
        if a["disposition"] == "AMA":
            course += f" {he} left against medical advice before the planned work-up was complete."
        if p.frailty + rng.normal(0, 0.5) > 0.8:
            course += (
                " Social work was consulted for concerns about safety at home and difficulty affording medications."
            )
        dispo = {
            "HOME": "Home",
            "HOME_SERVICES": "Home With Service",
            "SNF": "Extended Care",
            "REHAB": "Extended Care",
            "AMA": "Left against medical advice",
        }[a["disposition"]]
        condition = (
            "Mental Status: Clear and coherent.\nLevel of Consciousness: Alert and interactive.\n"
            "Activity Status: Ambulatory - Independent."
            if iv
            else "Stable, ambulating, tolerating a diet."
        )
        discharge_meds = "\n".join(f"{i}. {m}" for i, m in enumerate(meds + ["acetaminophen 650 mg PO q6h PRN"], 1))
        instructions = (
            f"{'Dear Mr.' if p.sex == 'M' else 'Dear Ms.'} {name('Known lastname')},\n\nYou were "
            f"admitted for {pr.diagnosis.lower()}. Please take your medications as prescribed and "
            "return to the emergency department for fever, chest pain or shortness of breath."
        )
        followup = (
            f"Please follow up with {name('First Name')} {name('Last Name')} in 1 week. "
            f"Phone: {name('Telephone/Fax (1)')}"
        )
    secondary = "\n".join(c.names[0] for c in conds if w.chance(0.7))
    labs_t = "___" if iv else date(a["admit"])
    results = (
        f"{labs_t} 08:15PM BLOOD WBC-{round(float(np.clip(9 + 4 * max(seen, 0) + rng.normal(0, 2), 1, 40)), 1)} "
        f"Hgb-{round(float(rng.normal(11.5, 1.5)), 1)} Plt-{int(rng.normal(230, 60))}\n"
        f"{labs_t} 08:15PM BLOOD Glucose-{int(rng.normal(140, 30))} BUN-{int(rng.normal(25, 10))} "
        f"Creat-{round(float(abs(rng.normal(1.3, 0.5))), 1)} Na-{int(rng.normal(138, 3))} "
        f"K-{round(float(rng.normal(4.2, 0.4)), 1)}\n{labs_t} 08:22PM BLOOD Lactate-{lactate}"
    )
    if iv:
        header = (
            f" \nName:  ___                     Unit No:   ___\n \nAdmission Date:  ___              "
            f"Discharge Date:   ___\n \nDate of Birth:  ___             Sex:   {p.sex}\n \n"
        )
        exam = f"ADMISSION PHYSICAL EXAM:\n========================\n{exam}"
        if not died:
            exam += (
                "\n\nDISCHARGE PHYSICAL EXAM:\n========================\nVitals: afebrile, stable\n"
                "General: Comfortable, in no distress"
            )
        results = f"ADMISSION LABS:\n===============\n{results}"
    else:
        header = (
            f"Admission Date:  {date(a['admit'])}              Discharge Date:   {date(a['disch'])}\n\n"
            f"Date of Birth:  {date(dob)}             Sex:   {p.sex}\n\n"
        )
        if not died:
            exam += "\n\nDischarge exam:\nAfebrile, vital signs stable, comfortable."
    sections = [
        ("Service", pr.service, True),
        ("Allergies", w.pick(ALLERGIES), False),
        ("Attending", name("First Name3 (LF)") + ("." if iv else ""), True),
        ("Chief Complaint", w.pick(pr.complaints), False),
        (
            "Major Surgical or Invasive Procedure",
            pr.procedure if not died else "Intubation, central line placement",
            False,
        ),
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
    body = "".join(
        f"{title}: {text}\n{blank}" if inline else f"{title}:\n{text}\n{blank}" for title, text, inline in sections
    )
    signature = (
        ""
        if iv
        else (
            f"\n                             {name('First Name11 (Name Pattern1)')} "
            f"{name('Last Name (NamePattern4)')} MD {name('MD Number(1)')}\n\n"
            f"Completed by:{date(a['disch'] + timedelta(days=2))}\n"
        )
    )
    return header + body + signature
