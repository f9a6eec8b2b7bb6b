"""The claim script of lane_claims.py: both lanes read, due jobs claimed, arq's opening done."""

# KEYS[1]: the interactive lane, KEYS[2]: the batch lane. ARGV: now in ms, the in-progress TTL
# in ms, free slots, free batch slots, at most how many due ids to read for them (beyond those
# passed over), the in-progress, job and retry key prefixes, this replica's id, the lease key
# prefix, '1' if claims of replicas without a lease may be taken over, how many batch function
# names follow, those names, then the ids of jobs to pass over unread (ours, and those seen held
# elsewhere a moment ago). Returns {interactive, batch, reclaimed, held, more}: the first two a
# flat list of job id, score, envelope (nil if gone) and try for each job claimed; `held` the ids
# it found claimed by another replica (or by us) and left alone; `more` 1 or 0 for each lane:
# whether it has due ids this claim did not reach (out of slots or of read limit, or not read for
# want of a batch slot).
CLAIM_SCRIPT = """
local now, ttl = ARGV[1], ARGV[2]
local free, batch_free, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local running, envelopes, tries = ARGV[6], ARGV[7], ARGV[8]
local owner, leases, may_reclaim = ARGV[9], ARGV[10], ARGV[11] == '1'
local last_name = 12 + tonumber(ARGV[12])
local batch_functions, ours = {}, {}
for i = 13, last_name do batch_functions[ARGV[i]] = true end
for i = last_name + 1, #ARGV do ours[ARGV[i]] = true end
local passed_over = #ARGV - last_name

-- Whether the job is a batch job, and its envelope (false if gone). A missing or undecodable
-- envelope is interactive: arq's run_job fails it as it always did.
local function is_batch(job_id)
    local envelope = redis.call('GET', envelopes .. job_id)
    if not envelope then return false, false end
    local named = false
    for name in pairs(batch_functions) do  -- most envelopes are never decoded
        if string.find(envelope, name, 1, true) then named = true end
    end
    if not named then return false, envelope end
    local ok, decoded = pcall(cjson.decode, envelope)
    return ok and type(decoded) == 'table' and batch_functions[decoded['f']] == true, envelope
end

-- 'free' (no claim), 'lapsed' (its replica's lease is gone) or false: ours, or held (noted).
local held = {}
local function claim_state(job_id)
    if ours[job_id] then return false end
    local holder = redis.call('GET', running .. job_id)
    if not holder then return 'free' end
    if may_reclaim and holder ~= '1' and holder ~= owner
        and redis.call('EXISTS', leases .. holder) == 0 then
        return 'lapsed'
    end
    held[#held + 1] = job_id
    return false
end

-- The claim, then arq's run_job opening transaction (read the job, count the try), which the
-- replica then does not send (openings.py).
local reclaimed = {}
local function claim(into, job_id, score, state, envelope)
    redis.call('PSETEX', running .. job_id, ttl, owner)
    if envelope == nil then envelope = redis.call('GET', envelopes .. job_id) end
    local try = redis.call('INCR', tries .. job_id)
    redis.call('EXPIRE', tries .. job_id, 88400)
    for _, value in ipairs({job_id, score, envelope, try}) do into[#into + 1] = value end
    if state == 'lapsed' then reclaimed[#reclaimed + 1] = job_id end
    free = free - 1
end

-- Visits a lane's due ids in score order, a page at a time, while `wanted()` slots are left and
-- at most `limit` ids beyond those passed over are read; `visit` says whether it took the id out
-- of the lane (later pages then start one earlier). True if due ids may be left unread.
local function each_due(lane, wanted, visit)
    local offset, read, budget = 0, 0, limit + passed_over
    while wanted() > 0 and read < budget do
        local size = math.min(wanted() + passed_over, budget - read)
        local due = redis.call(
            'ZRANGEBYSCORE', lane, '-inf', now, 'WITHSCORES', 'LIMIT', offset, size)
        for i = 1, #due, 2 do
            if wanted() == 0 then return true end
            read = read + 1
            if not visit(due[i], due[i + 1]) then offset = offset + 1 end
        end
        if #due < 2 * size then return false end
    end
    return true
end

local interactive, batch, more = {}, {}, {0, 0}
local function free_slots() return free end
local function batch_slots() return batch_free end

local function visit_interactive(job_id, score)
    local state = claim_state(job_id)
    if not state then return false end
    local moving, envelope = is_batch(job_id)
    if moving then
        -- Touch the in-progress key: a plain arq worker between its WATCH of it and its EXEC
        -- then fails its claim instead of running the job in the lane it just left.
        redis.call('SET', running .. job_id, 'moving', 'PX', 1)
        redis.call('DEL', running .. job_id)
        redis.call('ZADD', KEYS[2], score, job_id)
        redis.call('ZREM', KEYS[1], job_id)
        return true
    end
    claim(interactive, job_id, score, state, envelope)
    return false
end

local function visit_batch(job_id, score)
    local state = claim_state(job_id)
    if state then
        claim(batch, job_id, score, state, nil)
        batch_free = batch_free - 1
    end
    return false
end

if each_due(KEYS[1], free_slots, visit_interactive) then more[1] = 1 end
batch_free = math.min(batch_free, free)
if batch_free == 0 or each_due(KEYS[2], batch_slots, visit_batch) then more[2] = 1 end
return {interactive, batch, reclaimed, held, more}
"""
