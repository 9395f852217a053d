-- Argo CD health of a DataGuardian BackupPolicy (dataguardian.io/v1alpha1).
-- Conditions the operator sets: Ready (schedule valid and storage ready), ScheduleValid,
-- StorageReady, RPOMet (the newest successful backup is recent enough), Verified (the newest
-- finished RestoreValidation of the policy's backups passed) and, when the spec uses a field
-- this version does not act on, Unsupported.
--   Degraded:    Ready=False (bad schedule or time zone, storage missing or failing its probe),
--                RPOMet=False (backups overdue), Verified=False (the latest validation failed);
--   Suspended:   spec.suspend (no backups are scheduled) and nothing above is wrong;
--   Progressing: no status yet, a status of an older generation, or a storage not probed yet;
--   Healthy:     otherwise, also before the first backup is due (RPOMet=Unknown).
-- Runs in Argo CD's Lua sandbox: Lua 5.1 base and table libraries only (no string, no math).
local hs = {}

local function condition(conditionType)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

local function describe(reason, message)
  if reason ~= nil and reason ~= "" and message ~= nil and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= nil and message ~= "" then
    return message
  end
  return reason or ""
end

-- A status written for an older generation says nothing about the current spec.
if obj.status ~= nil then
  local generation = obj.metadata.generation
  local observed = obj.status.observedGeneration
  if generation ~= nil and observed ~= nil and observed < generation then
    hs.status = "Progressing"
    hs.message = "Waiting for the operator to observe generation " .. generation
      .. " (the status describes generation " .. observed .. ")"
    return hs
  end
end

local ready = condition("Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the policy"
  return hs
end
if ready.status ~= "True" then
  local storage = condition("StorageReady")
  if ready.reason == "StorageNotReady" and storage ~= nil and storage.reason == "NotProbedYet" then
    -- The schedule is fine and a new storage is probed within seconds: not a fault yet.
    hs.status = "Progressing"
    hs.message = describe(nil, storage.message)
    return hs
  end
  hs.status = "Degraded"
  hs.message = describe(ready.reason, ready.message)
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended: the schedule creates no backups (spec.suspend)"
  return hs
end

local rpo = condition("RPOMet")
if rpo ~= nil and rpo.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(rpo.reason, rpo.message)
  return hs
end

local verified = condition("Verified")
if verified ~= nil and verified.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(verified.reason, verified.message)
  return hs
end

hs.status = "Healthy"
hs.message = describe(nil, ready.message)
if rpo ~= nil and rpo.message ~= nil and rpo.message ~= "" then
  hs.message = hs.message .. "; " .. rpo.message
end
if verified ~= nil and verified.status == "True" and verified.message ~= nil then
  hs.message = hs.message .. "; " .. verified.message
end
local unsupported = condition("Unsupported")
if unsupported ~= nil and unsupported.status == "True" then
  hs.message = hs.message .. "; " .. describe(nil, unsupported.message)
end
return hs
