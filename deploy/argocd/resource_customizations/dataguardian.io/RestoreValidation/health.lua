-- Argo CD health of a DataGuardian RestoreValidation (dataguardian.io/v1alpha1).
-- Pending -> Running -> Succeeded | Failed. Succeeded means the validation was carried out and
-- status.result holds the verdict (Passed or Failed); Failed means it could not be carried out
-- (e.g. the artifact is missing). The operator sets the Complete or the Failed condition when it
-- ends.
--   Progressing: no status yet, Pending (queued for a validation slot, or waiting for what it
--                needs: the reason says what), Running;
--   Healthy:     Succeeded with result Passed: the backup restored and every check passed;
--   Degraded:    Succeeded with result Failed (the backup did not restore or a check failed),
--                or Failed.
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
  hs.message = "Waiting for the operator to schedule the validation"
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
  if obj.status.result == "Passed" then
    hs.status = "Healthy"
    hs.message = describe(nil, obj.status.message)
  else
    hs.status = "Degraded"
    hs.message = describe(obj.status.reason, obj.status.message)
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
