-- Argo CD health of a DataGuardian RestoreRun (dataguardian.io/v1alpha1).
-- Queued (or AwaitingApproval) -> Running -> Succeeded | Failed; the operator sets the Complete
-- or the Failed condition when the restore ends.
--   Progressing: no status yet, Queued (behind other restores into the same target, or waiting
--                for a missing or unfinished BackupRun, storage or Secret: the reason says
--                which), Running;
--   Suspended:   AwaitingApproval (a second person must approve it: kubectl dataguardian
--                approve NAME; also after an approval expired);
--   Healthy:     Succeeded (written and the artifact's SHA-256 verified while streaming);
--   Degraded:    Failed, or AwaitingApproval with reason ApprovalUnavailable (approval is
--                required but the operator's admission webhook is off: only a fix helps).
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

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to queue the restore"
  return hs
end

-- A status written for an older generation says nothing about the current spec.
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
    .. " (the status describes generation " .. observed .. ")"
  return hs
end

local phase = obj.status.phase
local failed = condition("Failed")
if phase == "Failed" or (failed ~= nil and failed.status == "True") then
  hs.status = "Degraded"
  hs.message = describe(obj.status.reason, obj.status.message)
  return hs
end

local complete = condition("Complete")
if phase == "Succeeded" or (complete ~= nil and complete.status == "True") then
  hs.status = "Healthy"
  hs.message = describe(nil, obj.status.message)
  return hs
end

-- Waiting for a person (the two-person rule), or for a fix when no approval can be trusted.
if phase == "AwaitingApproval" then
  if obj.status.reason == "ApprovalUnavailable" then
    hs.status = "Degraded"
  else
    hs.status = "Suspended"
  end
  hs.message = describe(obj.status.reason, obj.status.message)
  return hs
end

-- Queued or Running: the reason and message say what it waits for or does.
hs.status = "Progressing"
hs.message = describe(obj.status.reason, obj.status.message)
if hs.message == "" then
  hs.message = phase
end
return hs
