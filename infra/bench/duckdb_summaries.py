"""The peer of `owsu-aggregator rebuild` in `owsu bench`: DuckDB computes the same four
summary tables from the same raw Delta tables (the files their logs list as active), with the
same meaning of every figure (shared/DESIGN.md). Prints one JSON line: seconds, rows and totals.

    python infra/bench/duckdb_summaries.py STORE_DIR
"""
import json
import os
import sys
import time

import duckdb
from deltalake import DeltaTable

store = sys.argv[1].rstrip("/")
started = time.time()
con = duckdb.connect()
con.execute("set timezone = 'UTC'")


def files(table):
    return DeltaTable(f"{store}/{table}").file_uris()


con.execute(f"create view raw_svc as select * from read_parquet({files('raw/service_events')})")
con.execute(f"create view raw_cmp as select * from read_parquet({files('raw/complaint_events')})")
con.execute(f"create view raw_days as select * from read_parquet({files('raw/unit_days')})")

# Cambodia time is UTC+07:00 all year.
LOCAL = "cast(({t} + interval 7 hour) as date)"

# Events a correction replaces: every event a correction names and, of several corrections of one
# original, all but the one recorded last (ties: the larger event id).
con.execute("""
create table superseded as
with corr as (
  select distinct event_id, supersedes_event_id t, recorded_at from raw_svc where supersedes_event_id is not null
  union select distinct event_id, supersedes_event_id, recorded_at from raw_cmp where supersedes_event_id is not null),
ranked as (select event_id, t, row_number() over (partition by t order by recorded_at desc, event_id desc) rn from corr)
select distinct t id from corr
union select event_id from ranked where rn > 1""")

con.execute(f"""
create table svc as
with ev as (select * exclude (rn) from (select *, row_number() over (partition by event_id) rn from raw_svc) where rn = 1),
sup as (select id from superseded)
select * from ev where event_id not in (select id from sup)""")

con.execute(f"""
create table firsts as
select request_id, stage, arg_min(struct_pack(occurred_at, unit_code, service_code, sector_code),
                                  struct_pack(occurred_at, recorded_at, event_id)) f
from svc where stage in ('RECEIVED', 'DELIVERED', 'REJECTED', 'CANCELLED')
group by request_id, stage""")

con.execute(f"""
create table processing_times as
select {LOCAL.format(t='d.f.occurred_at')} date, d.f.unit_code unit_code, d.f.sector_code sector_code,
       d.f.service_code service_code,
       cast(floor((epoch_ms(d.f.occurred_at) - epoch_ms(r.f.occurred_at)) / 1000.0) as bigint) processing_seconds
from firsts d join firsts r on d.request_id = r.request_id and d.stage = 'DELIVERED' and r.stage = 'RECEIVED'
where d.f.occurred_at >= r.f.occurred_at""")

con.execute(f"""
create table services_daily as
with cells as (
  select {LOCAL.format(t='f.occurred_at')} date, f.unit_code unit_code, f.sector_code sector_code, f.service_code service_code,
         (stage = 'RECEIVED')::int received, (stage = 'DELIVERED')::int delivered,
         (stage = 'REJECTED')::int rejected, (stage = 'CANCELLED')::int cancelled,
         0 fee_payments, 0 refunds, 0::bigint revenue, 0::bigint secs, 0 n
  from firsts
  union all
  select {LOCAL.format(t='occurred_at')}, unit_code, sector_code, service_code, 0, 0, 0, 0,
         (fee_riel > 0)::int, (fee_riel < 0)::int, coalesce(fee_riel, 0), 0, 0
  from svc where stage = 'FEE_PAID'
  union all
  select date, unit_code, sector_code, service_code, 0, 0, 0, 0, 0, 0, 0, processing_seconds, 1
  from processing_times)
select date, unit_code, sector_code, service_code, sum(received) requests_received, sum(delivered) services_delivered,
       sum(rejected) requests_rejected, sum(cancelled) requests_cancelled, sum(fee_payments) fee_payments,
       sum(refunds) refunds, sum(revenue) revenue_riel, sum(secs) processing_seconds_sum, sum(n) processing_count
from cells group by all""")

con.execute(f"""
create table complaints_daily as
with ev as (select * exclude (rn) from (select *, row_number() over (partition by event_id) rn from raw_cmp) where rn = 1),
sup as (select id from superseded),
eff as (select * from ev where event_id not in (select id from sup)),
per as (
  select complaint_id,
    arg_min(struct_pack(occurred_at, unit_code, sector_code), struct_pack(occurred_at, recorded_at, event_id))
      filter (where stage = 'RECEIVED') rcv,
    arg_min(sector_code, struct_pack(occurred_at, recorded_at, event_id)) filter (where sector_code is not null) any_sector,
    arg_max(stage, struct_pack(occurred_at, recorded_at, event_id))
      filter (where stage in ('RESOLVED', 'MORE_INFO_REQUIRED', 'WITHDRAWN')) status,
    arg_max(stage, struct_pack(occurred_at, recorded_at, event_id))
      filter (where stage in ('WITHIN_JURISDICTION', 'OUTSIDE_JURISDICTION')) decision
  from eff group by complaint_id),
cls as (
  select {LOCAL.format(t='rcv.occurred_at')} date, rcv.unit_code unit_code, coalesce(rcv.sector_code, any_sector) sector_code,
    status, case when status = 'RESOLVED' then 'WITHIN_JURISDICTION' else decision end jurisdiction
  from per where rcv is not null)
select date, unit_code, sector_code, count(*) complaints_received,
  count(*) filter (where jurisdiction = 'WITHIN_JURISDICTION') within_jurisdiction,
  count(*) filter (where jurisdiction = 'OUTSIDE_JURISDICTION') outside_jurisdiction,
  count(*) filter (where jurisdiction is null) jurisdiction_undecided,
  count(*) filter (where status = 'RESOLVED') resolved,
  count(*) filter (where status = 'MORE_INFO_REQUIRED') more_info_required,
  count(*) filter (where status is null) open,
  count(*) filter (where status = 'WITHDRAWN') withdrawn,
  count(*) filter (where status is null and jurisdiction = 'WITHIN_JURISDICTION') open_within_jurisdiction
from cls group by all""")

con.execute(f"""
create table unit_days as
with closes as (
  select unit_code, date, arg_max(struct_pack(services_recorded, complaints_recorded),
                                  struct_pack(closed_at, services_recorded, complaints_recorded)) c
  from raw_days group by all),
arrived as (
  select unit_code, date, sum(s) s, sum(c) c from (
    select unit_code, {LOCAL.format(t='recorded_at')} date, 1 s, 0 c
      from (select distinct event_id, unit_code, recorded_at from raw_svc)
    union all
    select unit_code, {LOCAL.format(t='recorded_at')}, 0, 1
      from (select distinct event_id, unit_code, recorded_at from raw_cmp)) group by all)
select coalesce(a.date, k.date) date, coalesce(a.unit_code, k.unit_code) unit_code, k.c is not null closed,
  k.c.services_recorded reported_services, k.c.complaints_recorded reported_complaints,
  coalesce(a.s, 0) arrived_services, coalesce(a.c, 0) arrived_complaints
from arrived a full outer join closes k on a.unit_code = k.unit_code and a.date = k.date""")

seconds = time.time() - started
out = {"seconds": round(seconds, 3)}
for t in ["services_daily", "complaints_daily", "unit_days", "processing_times"]:
    out[t + "_rows"] = con.execute(f"select count(*) from {t}").fetchone()[0]
out["services_delivered"], out["revenue_riel"] = con.execute(
    "select sum(services_delivered), sum(revenue_riel) from services_daily").fetchone()
out["complaints_received"], out["resolved"] = con.execute(
    "select sum(complaints_received), sum(resolved) from complaints_daily").fetchone()
out = {k: (int(v) if isinstance(v, (int, float)) and k != "seconds" else v) for k, v in out.items()}
print(json.dumps(out))
sys.stdout.flush()
# deltalake's native threads can abort the interpreter's shutdown after all is printed.
os._exit(0)
