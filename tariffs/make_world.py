"""Regenerates tariffs/world.csv, the sample world deck (run: python tariffs/make_world.py).

Country-level rows for every region phonenumbers knows, with realistic mobile ranges,
French special ranges (08 shared-cost and premium, 118 directories), NANP Caribbean
area codes, satellite networks, and a scheduled price change. Prices are fixed per
region (a hash), so the file is reproducible.
"""

from __future__ import annotations

import hashlib
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import phonenumbers
from phonenumbers import geocoder

HERE = Path(__file__).parent
EUROPE = set(
    [
        "AD",
        "AL",
        "AT",
        "BA",
        "BE",
        "BG",
        "BY",
        "CH",
        "CY",
        "CZ",
        "DE",
        "DK",
        "EE",
        "ES",
        "FI",
        "FO",
        "FR",
        "GB",
        "GI",
        "GR",
        "HR",
        "HU",
        "IE",
        "IS",
        "IT",
        "LI",
        "LT",
        "LU",
        "LV",
        "MC",
        "MD",
        "ME",
        "MK",
        "MT",
        "NL",
        "NO",
        "PL",
        "PT",
        "RO",
        "RS",
        "SE",
        "SI",
        "SK",
        "SM",
        "UA",
        "VA",
        "XK",
    ]
)
# Mobile ranges (E.164 prefixes) of the countries most called from a French office.
MOBILE = {
    "GB": ["447"],
    "DE": ["4915", "4916", "4917"],
    "ES": ["346", "347"],
    "IT": ["393"],
    "BE": ["324"],
    "NL": ["316"],
    "CH": ["4175", "4176", "4177", "4178", "4179"],
    "PT": ["3519"],
    "AT": ["4366", "4367", "4368", "4369"],
    "IE": ["3538"],
    "LU": ["3526"],
    "DK": ["452", "453", "454", "455", "456", "457", "458", "459"],
    "PL": ["485", "486", "487", "488"],
    "SE": ["467"],
    "NO": ["474", "479"],
    "FI": ["3584", "35850"],
    "GR": ["3069"],
    "RO": ["407"],
    "CZ": ["4206", "4207"],
    "HU": ["3620", "3630", "3670"],
    "MA": ["2126", "2127"],
    "DZ": ["2135", "2136", "2137"],
    "TN": ["2162", "2165", "2169"],
    "SN": ["2217"],
    "CI": ["22501", "22505", "22507"],
    "TR": ["905"],
    "IL": ["9725"],
    "RU": ["79"],
    "CN": ["861"],
    "IN": ["917", "918", "919"],
    "JP": ["8170", "8180", "8190"],
    "AU": ["614"],
    "BR": ["55119", "55219"],
    "MX": ["521"],
    "ZA": ["276", "277", "278"],
    "AE": ["9715"],
    "SA": ["9665"],
    "NG": ["2347", "2348"],
}
CARIBBEAN = {
    "1242": "Bahamas",
    "1246": "Barbados",
    "1268": "Antigua",
    "1284": "BVI",
    "1345": "Cayman Islands",
    "1441": "Bermuda",
    "1473": "Grenada",
    "1809": "Dominican Republic",
    "1829": "Dominican Republic",
    "1849": "Dominican Republic",
    "1876": "Jamaica",
    "1868": "Trinidad and Tobago",
    "1758": "Saint Lucia",
    "1784": "Saint Vincent",
}
FRANCE_SPECIAL = [
    # prefix, destination, per minute, connect, initial, increment, minimum
    # Short codes have no E.164 form: they are keyed "0" + country code + code (never a real number).
    ("033118", "France directory 118", "0.90", "1.50", "1", "1", "1.50"),
    ("0333", "France short services 3xxx", "0.15", "0", "60", "60", ""),
    ("033", "France other short codes", "0.05", "0", "60", "60", ""),
    ("3380", "France toll-free 080", "0", "0", "1", "1", ""),
    ("3381", "France shared cost 081", "0.06", "0", "60", "60", ""),
    ("3382", "France shared cost 082", "0.12", "0", "60", "60", ""),
    ("3384", "France shared cost 084", "0.06", "0", "60", "60", ""),
    ("3389", "France premium 089", "0.80", "0", "1", "1", "0.10"),
    ("33891", "France premium 0891", "0.15", "0", "1", "1", "0.05"),
    ("33892", "France premium 0892", "0.35", "0", "1", "1", "0.10"),
    ("33897", "France premium 0897", "0.50", "0", "1", "1", "0.10"),
    ("33899", "France premium 0899", "0.80", "0.12", "1", "1", "0.20"),
]
SATELLITE = [
    ("870", "Inmarsat", "6.50", "0.50", "60", "60", "1.00"),
    ("8816", "Iridium", "7.20", "0.50", "60", "60", "1.00"),
    ("8817", "Iridium", "7.20", "0.50", "60", "60", "1.00"),
    ("882", "International networks", "4.80", "0.30", "60", "60", "0.50"),
]
THIRTY_SIX = {"US", "CA", "GB", "MA"}  # 30/6 billing
PER_SECOND = {"DE", "CH", "CN", "IN"}  # 1/1 billing


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


# Well-known fixed-line prices (EUR/min) instead of the hashed ones.
KNOWN = {"US": 120, "CA": 120, "GB": 250, "DE": 220, "FR": 150, "CN": 300, "IN": 450, "RU": 900}


def _price(region: str, mobile: bool) -> str:
    """Per-minute price in ten-thousandths of a euro, as a decimal string."""
    if region in KNOWN:
        tenk = KNOWN[region]
    elif region in EUROPE:
        tenk = 120 + _h(region) % 400
    else:
        tenk = 400 + _h(region) % 3000
    if mobile:
        tenk = tenk * 3 + 300
    return f"{tenk // 10000}.{tenk % 10000:04d}"


def _increments(region: str) -> tuple[str, str]:
    if region in THIRTY_SIX:
        return "30", "6"
    if region in PER_SECOND:
        return "1", "1"
    return "60", "60"


def rows() -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    seen: set[str] = set()
    for code in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE):
        region = phonenumbers.region_code_for_country_code(code)
        cc = str(code)
        if region == "001" or cc in seen:  # non-geographic codes: satellite rows below
            continue
        seen.add(cc)
        example = phonenumbers.example_number(region)
        name = geocoder.country_name_for_number(example, "en") if example else ""
        name = "USA and Canada" if cc == "1" else (name or f"Region {region}")
        first, then = _increments(region)
        connect = "0.05" if _h(region) % 9 == 0 and region not in EUROPE else "0"
        out.append((cc, name, _price(region, False), connect, first, then, "", "", ""))
        for prefix in MOBILE.get(region, []):
            out.append((prefix, f"{name} mobile", _price(region, True), connect, first, then, "", "", ""))
    for prefix, name in CARIBBEAN.items():
        out.append((prefix, name, _price(name, False), "0", "60", "60", "", "", ""))
    out += [(*r, "", "") for r in FRANCE_SPECIAL]
    out += [(*r, "", "") for r in SATELLITE]
    # A scheduled price change: UK fixed gets cheaper on 2027-01-01.
    uk = next(i for i, r in enumerate(out) if r[0] == "44")
    old = out[uk]
    out[uk] = (*old[:7], "", "2027-01-01T00:00:00+00:00")
    out.insert(uk + 1, (old[0], old[1], "0.0150", *old[3:7], "2027-01-01T00:00:00+00:00", ""))
    return out


def off_peak(r: tuple[str, ...]) -> tuple[str, ...]:
    """The same row 40% cheaper per minute, billed per second after the first 30: evenings,
    nights and weekends in the office-fr-bands plan."""
    cheaper = (Decimal(r[2]) * Decimal("0.6")).quantize(Decimal("0.0001"), ROUND_HALF_UP)
    return (r[0], r[1], str(cheaper), r[3], "30", "1", *r[6:])


def write(name: str, title: str, deck: list[tuple[str, ...]]) -> None:
    header = (
        "prefix,destination,rate_per_minute,connect_fee,initial_increment,increment,"
        "minimum_charge,valid_from,valid_until"
    )
    lines = [
        f"# {title} Prices in EUR per minute; generated by",
        "# tariffs/make_world.py (edit that, not this file).",
        header,
    ]
    for r in deck:
        lines.append(",".join(f'"{c}"' if "," in c else c for c in r))
    (HERE / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines) - 3} rows to {HERE / name}")


def main() -> None:
    deck = rows()
    write("world.csv", "Sample world deck for the office-fr plan.", deck)
    write("world-offpeak.csv", "Off-peak prices of world.csv (office-fr-bands plan).", [off_peak(r) for r in deck])


if __name__ == "__main__":
    main()
