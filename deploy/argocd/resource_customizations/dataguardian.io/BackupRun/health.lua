-- Argo CD health of a DataGuardian BackupRun (dataguardian.io/v1alpha1).
-- Pending -> Running -> Succeeded | Failed; the operator sets the Complete or the Failed
-- condition when the run ends, and a RestoreValidation of the backup records its verdict in
-- status.verification.
--   Progressing: no status yet, Pending (queued, or waiting for a missing policy, storage or
--                Secret: the reason says which), Running;
--   Healthy:     Succeeded (the artifact was confirmed in storage by size and SHA-256);
--   Degraded:    Failed, or Succeeded but a RestoreValidation of it failed (it did not restore).
-- As a PreSync hook a BackupRun therefore holds the sync until the backup is confirmed, and
-- fails the sync when it fails.
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
  hs.message = "Waiting for the operator to start the backup"
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
  local verification = obj.status.verification
  if verification ~= nil and verification.result == "Failed" then
    hs.status = "Degraded"
    hs.message = "The backup did not restore: RestoreValidation "
      .. (verification.validationName or "") .. " failed"
    return hs
  end
  hs.status = "Healthy"
  hs.message = describe(nil, obj.status.message)
  if verification ~= nil and verification.result == "Passed" then
    hs.message = hs.message .. "; restore proven by RestoreValidation "
      .. (verification.validationName or "")
  end
  return hs
end

-- Pending or Running: the reason and message say what it waits for or does.
hs.status = "Progressing"
hs.message = describe(obj.status.reason, obj.status.message)
if hs.message == "" then
  hs.message = phase
end
return hs
