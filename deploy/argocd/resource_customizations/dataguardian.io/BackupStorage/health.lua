-- Argo CD health of a DataGuardian BackupStorage (dataguardian.io/v1alpha1).
-- The operator probes the storage (write, read back, delete a probe object; for a filesystem
-- storage, look at its claim) and sets the Ready condition from the latest probe.
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
  hs.message = "Waiting for the operator to probe the storage"
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(nil, ready.message)
  return hs
end
-- The operator writes Ready=False with the step of the probe that failed.
hs.status = "Degraded"
hs.message = describe(ready.reason, ready.message)
return hs
